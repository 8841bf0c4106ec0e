"""OpenAI's error shape for the OpenAI doors: `{"error": {message, type, param, code}}`.

The doors raise and meet the gateway's usual errors (`HTTPException`, validation errors,
`UnavailableError`, and the authentication of the enclosing router); `OpenAIRoute` renders
each of them the way OpenAI clients parse them, so the official client raises its typed
exceptions (`BadRequestError`, `AuthenticationError`, `NotFoundError`, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import orjson
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from soma.core.errors import UnavailableError
from soma.gateway.errors import UNAVAILABLE_RETRY_AFTER_S
from soma.gateway.json_route import JsonRoute
from soma.gateway.problems import problem_responses

JSON = "application/json"
NO_RETRY = {"x-should-retry": "false"}
"""OpenAI's clients retry 409, 429 and 5xx by themselves; a failed run must not be re-sent."""
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_WHEN = {
    400: "The request is malformed or uses a parameter this platform does not support.",
    401: "No API key, or an unknown or revoked one.",
    403: "The key lacks the `chat` scope, or policy denies the action.",
    404: "No such agent (model) or response in the caller's tenant.",
    409: "The request conflicts with the current state (e.g. the response already ended).",
    422: "Not answered by these doors: a request that does not validate answers 400.",
    429: "A rate or budget limit is exhausted; retry after `Retry-After` seconds.",
    503: "The platform is starting or draining; retry after `Retry-After` seconds.",
}
DOOR_STATUSES = (400, 401, 403, 404, 409, 413, 422, 429, 503)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """How every OpenAI door answers an error."""

    error: ErrorDetail


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = orjson.dumps(error_body(status, message, param, code))
    return Response(body, status, headers=dict(headers or {}), media_type=JSON)


class DoorError(HTTPException):
    """An error that names the request parameter at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers=dict(headers) if headers else None)
        self.param = param
        self.code = code


def invalid(message: str, param: str | None = None) -> DoorError:
    return DoorError(400, message, param, "invalid_request")


def unsupported(param: str, why: str = "") -> DoorError:
    reason = f": {why}" if why else ""
    message = f"Unsupported parameter: '{param}'{reason}"
    return DoorError(400, message, param, "unsupported_parameter")


def _param(loc: Sequence[Any]) -> str | None:
    """A location as OpenAI names parameters: `messages[1].content`."""
    name = ""
    for part in loc:
        if part == "body":
            continue
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or None


def _validation(exc: RequestValidationError) -> Response:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    param = _param(first.get("loc", ()))
    if first.get("type") == "extra_forbidden" and param is not None:
        message = f"Unsupported parameter: '{param}' (this platform does not honour it)"
        return error_response(400, message, param, "unsupported_parameter")
    message = "; ".join(f"{_param(e.get('loc', ())) or 'body'}: {e['msg']}" for e in errors[:10])
    return error_response(400, message or "invalid request", param, "invalid_request")


class OpenAIRoute(JsonRoute):
    """Routes of the OpenAI doors: their errors, authentication's included, in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def speak_openai(request: Request) -> Response:
            try:
                return await handler(request)
            except DoorError as exc:
                return error_response(
                    exc.status_code, str(exc.detail), exc.param, exc.code, exc.headers
                )
            except HTTPException as exc:
                return error_response(exc.status_code, str(exc.detail), headers=exc.headers)
            except RequestValidationError as exc:
                return _validation(exc)
            except UnavailableError as exc:
                retry = {"Retry-After": UNAVAILABLE_RETRY_AFTER_S}
                return error_response(503, str(exc), headers=retry)

        return speak_openai


def error_responses(statuses: tuple[int, ...] = DOOR_STATUSES) -> dict[int | str, Any]:
    """OpenAPI `responses=` entries: these statuses answer in OpenAI's error shape."""
    answers: dict[int | str, Any] = {
        status: {"description": _WHEN.get(status, "Error"), "model": OpenAIError}
        for status in statuses
    }
    # The edge refuses an oversized body before any route sees it: in the platform's shape.
    answers.update(problem_responses([413]))
    return answers
