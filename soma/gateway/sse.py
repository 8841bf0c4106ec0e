"""Server-sent events of a run: framing, heartbeats, and ending when the gateway drains."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson

from soma.runs.events import RunEvent
from soma.runs.reader import RunEventReader

SSE_MEDIA_TYPE = "text/event-stream"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RETRY_MS = 1000


def frame(event: RunEvent) -> bytes:
    data = orjson.dumps(event.data)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.type.encode(), data)


def parse_last_event_id(header: str | None, query: int | None) -> int:
    """`Last-Event-ID` wins over `?after=`; anything unparsable means from the start."""
    if header is not None:
        try:
            return max(int(header.strip()), 0)
        except ValueError:
            return 0
    return max(query or 0, 0)


async def run_stream(
    reader: RunEventReader,
    tenant_id: str,
    run_id: str,
    after_id: int,
    closing: asyncio.Event,
) -> AsyncIterator[bytes]:
    """SSE bytes until the terminal event, or until `closing` (the client then resumes
    elsewhere with `Last-Event-ID`)."""
    yield b"retry: %d\n\n" % RETRY_MS
    events = reader.events(tenant_id, run_id, after_id).__aiter__()
    closed = asyncio.create_task(closing.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(events.__anext__())
            done, _ = await asyncio.wait({nxt, closed}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                await asyncio.gather(nxt, return_exceptions=True)
                return
            try:
                event = nxt.result()
            except StopAsyncIteration:
                return
            yield b": heartbeat\n\n" if event is None else frame(event)
    finally:
        closed.cancel()
        await events.aclose()  # type: ignore[attr-defined]
