"""RFC 9457 problem+json responses: the one error body of the HTTP API (ARCHITECTURE §9)."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"


class Problem(BaseModel):
    """An error answer; extension members (e.g. `errors` of a 422) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def problem_bytes(status: int, detail: str) -> bytes:
    """The body of a problem answered below the framework (middleware, HTTP protocol)."""
    title = status_title(status)
    return orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})


def status_title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


_WHEN = {
    400: "The request is malformed (unparsable body, unknown cursor).",
    401: "No API key, or an unknown or revoked one.",
    403: "The key lacks the scope, or policy denies the action.",
    404: "No such resource in the caller's tenant.",
    408: "The request line, headers or body came slower than `http.header_timeout_s` / "
    "`http.body_timeout_s` allow.",
    409: "The request conflicts with the resource's current state.",
    413: "The request body is larger than `http.max_body_bytes`.",
    422: "The request does not match its schema; `errors` lists each problem.",
    429: "A rate or budget limit is exhausted; retry after `Retry-After` seconds.",
    431: "The request line and headers are larger than `http.max_header_bytes`, or more "
    "than `http.max_headers` headers came.",
    503: "The platform is starting or draining; retry after `Retry-After` seconds.",
}


EDGE_PROBLEMS = (408, 431)
"""Answered by the HTTP server before any route, so possible on every operation."""


def problem_responses(statuses: Iterable[int]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem+json answers with these statuses."""
    return {
        status: {
            "description": _WHEN.get(status, status_title(status)),
            "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
        }
        for status in statuses
    }


def not_found(kind: str, resource_id: str) -> HTTPException:
    # Another tenant's resource gets exactly this body too, so existence never leaks.
    return HTTPException(404, f"{kind} {resource_id!r} not found")


def bad_request(detail: str) -> HTTPException:
    return HTTPException(400, detail)


def conflict(detail: str) -> HTTPException:
    return HTTPException(409, detail)


def unprocessable(detail: str) -> HTTPException:
    return HTTPException(422, detail)
