"""A small Server-Sent Events decoder (WHATWG event-stream rules) over an async line iterator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Feed lines without their terminator; a blank line dispatches the pending event."""

    __slots__ = ("_data", "_event", "_last_id")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None

    def decode(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = ServerSentEvent("\n".join(self._data), self._event or "message", self._last_id)
            self._data = []
            self._event = ""
            return event
        if line[0] == ":":
            return None
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None


async def aiter_sse(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    """Events of an event stream; an unterminated trailing event is dropped, as the spec says."""
    decoder = SSEDecoder()
    async for line in lines:
        event = decoder.decode(line)
        if event is not None:
            yield event
