"""Exception handlers of the app: every framework error becomes problem+json."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from soma.core.errors import LimitExceededError, UnavailableError
from soma.gateway.auth.guard import retry_after
from soma.gateway.problems import (
    EDGE_PROBLEMS,
    Problem,
    problem,
    problem_responses,
    status_title,
)

UNAVAILABLE_RETRY_AFTER_S = "2"
MAX_VALIDATION_ERRORS = 50
"""A body with thousands of bad items still gets a bounded answer."""


METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's).

    Asks each top-level route whether it would fully match the path with each method, so
    routes nested in included routers answer for themselves.
    """
    allowed = []
    for method in METHODS:
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in routes):
            allowed.append(method)
    return allowed


def _template(path: str) -> str:
    """`/v1/agents/{agent_id}` as a pattern of the paths it serves."""
    return re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path))


def documented_methods(paths: dict[str, Any], path: str) -> set[str]:
    """Methods the OpenAPI document gives this path. A path it names literally
    (`/v1/memories/export`) has those alone, not a sibling template's that would read it as
    an id (`DELETE /v1/memories/{memory_id}` answers 404 there)."""
    found = [t for t in paths if re.fullmatch(_template(t), path)]
    literal = [t for t in found if "{" not in t]
    return {m.upper() for t in (literal or found) for m in paths[t] if m.upper() in METHODS}


async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    response = problem(exc.status_code, status_title(exc.status_code), str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:
        served = allowed_methods(request.app.routes, request.scope)
        documented = documented_methods(request.app.openapi().get("paths", {}), request.url.path)
        allow = [m for m in served if m in documented] if documented else served
        response.headers["Allow"] = ", ".join(allow)
    return response


async def validation_problem(_: Request, exc: RequestValidationError) -> JSONResponse:
    found = exc.errors()
    errors = [
        {"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"]}
        for err in found[:MAX_VALIDATION_ERRORS]
    ]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
    if len(found) > MAX_VALIDATION_ERRORS:
        detail += f"; and {len(found) - MAX_VALIDATION_ERRORS} more"
    return problem(422, status_title(422), detail, errors=errors)


async def unavailable_problem(_: Request, exc: UnavailableError) -> JSONResponse:
    """A backend is down: nothing was done, and the client may simply try again."""
    response = problem(503, status_title(503), str(exc))
    response.headers["Retry-After"] = UNAVAILABLE_RETRY_AFTER_S
    return response


async def limited_problem(_: Request, exc: LimitExceededError) -> JSONResponse:
    response = problem(429, status_title(429), str(exc))
    response.headers["Retry-After"] = retry_after(exc.retry_after_s)
    return response


def install_problem_handlers(app: FastAPI) -> None:
    """Handlers for HTTP and validation errors, and the Problem schema in the document."""
    app.add_exception_handler(StarletteHTTPException, http_problem)  # type: ignore[arg-type]
    app.add_exception_handler(UnavailableError, unavailable_problem)  # type: ignore[arg-type]
    app.add_exception_handler(LimitExceededError, limited_problem)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_problem)  # type: ignore[arg-type]
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("Problem", Problem.model_json_schema())
        edge = {str(status): entry for status, entry in problem_responses(EDGE_PROBLEMS).items()}
        for item in document.get("paths", {}).values():
            for operation in item.values():
                if not isinstance(operation, dict):
                    continue
                responses = operation.setdefault("responses", {})
                for status, entry in edge.items():
                    responses.setdefault(status, entry)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
