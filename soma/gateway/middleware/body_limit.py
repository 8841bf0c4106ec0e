"""Request body limits enforced while reading, before any framework code parses the body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import Message, Receive

DISCONNECT: Message = {"type": "http.disconnect"}


def body_framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """`(Content-Length or None, chunked?)` of a request, from its raw ASGI headers."""
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            # The HTTP server has already refused a malformed or duplicated Content-Length.
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


class CountingReceive:
    """Counts a streamed body; past the limit it has the refusal sent and ends the request.

    The app then sees a disconnect, so it never parses a partial body, and the caller drops
    whatever the app still tries to send.
    """

    __slots__ = ("_limit", "_receive", "_refuse", "_seen", "refused")

    def __init__(self, receive: Receive, limit: int, refuse: Callable[[], Awaitable[None]]) -> None:
        self._receive = receive
        self._limit = limit
        self._refuse = refuse
        self._seen = 0
        self.refused = False

    async def __call__(self) -> Message:
        if self.refused:
            return DISCONNECT
        message = await self._receive()
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > self._limit:
                self.refused = True
                await self._refuse()
                return DISCONNECT
        return message
