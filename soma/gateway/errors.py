"""Exception handlers of the app: every framework error becomes problem+json."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from soma.core.errors import UnavailableError
from soma.gateway.problems import Problem, problem, status_title

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


async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    response = problem(exc.status_code, status_title(exc.status_code), str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:
        response.headers["Allow"] = ", ".join(allowed_methods(request.app.routes, request.scope))
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


def install_problem_handlers(app: FastAPI) -> None:
    """Handlers for HTTP and validation errors, and the Problem schema in the document."""
    app.add_exception_handler(StarletteHTTPException, http_problem)  # type: ignore[arg-type]
    app.add_exception_handler(UnavailableError, unavailable_problem)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_problem)  # type: ignore[arg-type]
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("Problem", Problem.model_json_schema())
        return document

    app.openapi = openapi  # type: ignore[method-assign]
