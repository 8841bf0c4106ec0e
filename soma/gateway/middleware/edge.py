"""The outermost gateway layer: body limit, error boundary and security headers, in one pass."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from soma.gateway.middleware.body_limit import CountingReceive, body_framing
from soma.gateway.middleware.errors import log_unhandled
from soma.gateway.middleware.security import SECURITY_HEADERS
from soma.gateway.problems import PROBLEM_JSON, problem_bytes
from soma.gateway.rate import RATE_HEADERS_STATE

Headers = tuple[tuple[bytes, bytes], ...]
_CONTENT_TYPE = (b"content-type", PROBLEM_JSON.encode())
_CLOSE = (b"connection", b"close")


class _Exchange:
    """One request's `send`: adds the security headers, knows whether the answer started."""

    __slots__ = ("_extra", "_scope", "_send", "closed", "started")

    def __init__(self, send: Send, extra: Headers, scope: Scope) -> None:
        self._send = send
        self._scope = scope
        self._extra = extra
        self.started = False
        self.closed = False
        """Set once this layer answered in the app's stead; the app's sends are dropped."""

    async def __call__(self, message: Message) -> None:
        if self.closed:
            return
        if message["type"] == "http.response.start":
            self.started = True
            message["headers"] = [*message.get("headers", ()), *self._extra]
            state = self._scope.get("state")
            rate = state.get(RATE_HEADERS_STATE) if state else None
            if rate:
                message["headers"] += [(k.encode(), v.encode()) for k, v in rate.items()]
        await self._send(message)

    async def answer(self, status: int, body: bytes, close: bool) -> None:
        if not self.started:
            headers = [_CONTENT_TYPE, (b"content-length", b"%d" % len(body))]
            if close:
                headers.append(_CLOSE)
            await self({"type": "http.response.start", "status": status, "headers": headers})
            await self({"type": "http.response.body", "body": body})
        self.closed = True


class EdgeMiddleware:
    """Pure ASGI: 413 before an oversized body is read, 500 problem+json for anything unhandled.

    A Content-Length over the limit is refused before the app runs; a chunked body is counted
    as it streams and refused as soon as it passes the limit. Either way the app never sees
    the body; the HTTP server drops the rest unparsed and closes (`EdgeProtocol`). No
    per-request work beyond a scan of the header list unless the body is chunked.
    """

    __slots__ = ("_app", "_headers", "_internal", "_limits", "_path_headers")

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        path_headers: Mapping[str, Headers] | None = None,
        path_limits: Mapping[str, int] | None = None,
    ) -> None:
        """`path_limits`: paths whose bodies may be larger (uploads) than `max_body_bytes`."""
        self._app = app
        self._headers = SECURITY_HEADERS
        self._path_headers = dict(path_headers or {})
        self._limits = {
            path: (limit, problem_bytes(413, f"the request body is larger than {limit} bytes"))
            for path, limit in {"": max_body_bytes, **(path_limits or {})}.items()
        }
        self._internal = problem_bytes(500, "the server could not answer this request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        exchange = _Exchange(send, self._path_headers.get(scope["path"], self._headers), scope)
        limit, too_large = self._limits.get(scope["path"]) or self._limits[""]
        length, chunked = body_framing(scope["headers"])
        if length is not None and length > limit:
            # No `Connection: close`: the server drops the unread body and then closes, so a
            # client still sending gets this answer rather than a reset.
            await exchange.answer(413, too_large, close=False)
            return
        if chunked:
            refuse = partial(exchange.answer, 413, too_large, False)
            receive = CountingReceive(receive, limit, refuse)
        try:
            await self._app(scope, receive, exchange)
        except Exception as exc:
            log_unhandled(exc, scope)
            await exchange.answer(500, self._internal, close=True)
