"""`POST /v1/sessions/{id}/messages` without FastAPI's per-request work, for plain requests.

Most of an accept's framework CPU went to FastAPI solving the route's dependencies and
validating each parameter on its own (docs/benchmarks.md). A plain message POST (a JSON body
that validates, no query but `wait`/`stream` as `true`/`false`, at most one well-formed
`Idempotency-Key`, a `Content-Length`) is parsed here in a few lines, admitted by the same gate
(the gateway's availability, the API key, the rate limit) and scope check, and handled by the
same `MessagePost`. Every other request, and any body that does not validate, goes on to the
FastAPI route untouched, which answers it as it always has (its 422s, 401 before 422...).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import orjson
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from soma.gateway.auth.deps import check_scope
from soma.gateway.auth.principal import Principal
from soma.gateway.routers.chat import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_IDEMPOTENCY_KEY,
    MESSAGES_PATH,
    MessageIn,
    MessagePost,
)

Gate = Callable[[Request], Awaitable[Principal]]
"""Admits a request or raises its HTTPException (503, 401, 429...)."""

_FLAGS = {b"true": True, b"false": False}
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN.encode())
_JSON = b"application/json"


class Plain:
    """What a plain request says besides its body."""

    __slots__ = ("idempotency_key", "stream", "wait")

    def __init__(self) -> None:
        self.wait = False
        self.stream = False
        self.idempotency_key: str | None = None


def plain(scope: Scope) -> Plain | None:
    """The request's flags and key when it is plain, else None (the FastAPI route's case)."""
    found = Plain()
    query: bytes = scope["query_string"]
    seen: set[bytes] = set()
    for pair in query.split(b"&") if query else ():
        name, _, value = pair.partition(b"=")
        flag = _FLAGS.get(value)
        if flag is None or name in seen or name not in (b"wait", b"stream"):
            return None
        seen.add(name)
        if name == b"wait":
            found.wait = flag
        else:
            found.stream = flag
    json = length = False
    for name, value in scope["headers"]:
        if name == b"content-type":
            if json:
                return None
            json = value.partition(b";")[0].strip().lower() == _JSON
        elif name == b"content-length":
            length = True
        elif name == b"idempotency-key":
            well_formed = len(value) <= MAX_IDEMPOTENCY_KEY and _IDEMPOTENCY_KEY.fullmatch(value)
            if found.idempotency_key is not None or not well_formed:
                return None
            found.idempotency_key = value.decode("ascii")
        elif name == b"transfer-encoding":
            return None
    return found if json and length else None


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that first hands back a body already read."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


class FastMessages:
    """The ASGI app of the fast route; `fallback` is the router holding the FastAPI route."""

    path = MESSAGES_PATH

    def __init__(self, gate: Gate, post: MessagePost, fallback: ASGIApp) -> None:
        self._gate = gate
        self._post = post
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # FastAPI's included routers record `scope["route"]` for their own routes only; the
        # request metrics are labelled by its `path`.
        scope["route"] = self
        found = plain(scope)
        if found is None:
            await self._fallback(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            raw = await request.body()
        except ClientDisconnect:
            return  # the client left, or the edge already answered 413
        try:
            body = MessageIn.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError):
            await self._fallback(scope, _replay(raw, receive), send)
            return
        principal = check_scope(await self._gate(request), "chat")
        response = await self._post(
            principal,
            scope["path_params"]["session_id"],
            body,
            wait=found.wait,
            stream=found.stream,
            idempotency_key=found.idempotency_key,
        )
        await response(scope, receive, send)


def fast_message_route(gate: Gate, post: MessagePost, fallback: ASGIApp) -> Route:
    """Mounted before the FastAPI route of the same path and method."""
    app = FastMessages(gate, post, fallback)
    return Route(MESSAGES_PATH, app, methods=["POST"], include_in_schema=False)
