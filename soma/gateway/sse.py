"""Server-sent events of a run: framing, heartbeats, and ending when the gateway drains."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import orjson

from soma.runs.events import RunEvent
from soma.runs.reader import RunEventReader

SSE_MEDIA_TYPE = "text/event-stream"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RETRY_MS = 1000
HEARTBEAT = b": heartbeat\n\n"
_log = logging.getLogger("soma.gateway.sse")


Render = Callable[[RunEvent], bytes]
"""One run event in a door's wire format (b"" to say nothing for it)."""


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
    *,
    fresh: bool = False,
    render: Render = frame,
    resume: bytes | None = None,
    retry: bool = True,
) -> AsyncIterator[bytes]:
    """SSE bytes until the terminal event, or until `closing`: then a last comment tells the
    client to resume from `/v1/runs/{id}/events` with `Last-Event-ID` (on any replica).

    Doors pass their `render` of each event and the `resume` comment that tells their
    clients how to pick the stream up again; `retry=False` leaves out the `retry:` field,
    which OpenAI's clients would take for an event without data.

    A reader task fills a queue, so a client that goes away cancels this generator at its
    one await and the reader task is cancelled cleanly (no half-closed async generator).
    """
    if retry:
        yield b"retry: %d\n\n" % RETRY_MS
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def produce() -> None:
        try:
            async for event in reader.events(tenant_id, run_id, after_id, fresh=fresh):
                if event is None:
                    queue.put_nowait(HEARTBEAT)
                    continue
                if chunk := render(event):
                    queue.put_nowait(chunk)
        except Exception as exc:  # the client resumes with Last-Event-ID; say why it ended
            _log.warning("event stream of run %s failed: %s", run_id, type(exc).__name__)
        queue.put_nowait(None)

    async def drained() -> None:
        await closing.wait()
        queue.put_nowait(resume if resume is not None else (
            b": the server is shutting down; resume with GET /v1/runs/%s/events "
            b"and Last-Event-ID\n\n" % run_id.encode()))  # fmt: skip
        queue.put_nowait(None)

    tasks = (asyncio.create_task(produce()), asyncio.create_task(drained()))
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
