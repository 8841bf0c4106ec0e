"""RFC 9457 problem+json responses: the one error body of the HTTP API (ARCHITECTURE §9)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def status_title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def not_found(kind: str, resource_id: str) -> HTTPException:
    # Another tenant's resource gets exactly this body too, so existence never leaks.
    return HTTPException(404, f"{kind} {resource_id!r} not found")


def conflict(detail: str) -> HTTPException:
    return HTTPException(409, detail)


def unprocessable(detail: str) -> HTTPException:
    return HTTPException(422, detail)
