"""Reading a run's events after an id: durable milestones merged with the live stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from soma.runs.events import FINISHED, RunEvent, stream_key
from soma.runs.port import EventStreams, StreamEntryLike
from soma.runs.store import RunStore

if TYPE_CHECKING:  # as in the store port: storage imports the runs package
    from soma.storage.repositories.messages import Message
    from soma.storage.repositories.runs import Run

READ_BATCH = 500
STREAM_RETRY_S = 1.0
_log = logging.getLogger("soma.runs")


class RunEventReader:
    """Yields each event once, in id order, then stops after the terminal one.

    `None` is yielded when nothing arrived for `heartbeat_s`, so callers can keep a
    connection alive.
    """

    def __init__(self, store: RunStore, streams: EventStreams, heartbeat_s: float) -> None:
        self._store = store
        self._streams = streams
        self._heartbeat_s = heartbeat_s

    async def events(
        self, tenant_id: str, run_id: str, after_id: int = 0, *, fresh: bool = False
    ) -> AsyncIterator[RunEvent | None]:
        """`fresh`: the caller just accepted the run, so the stream has all there is so far."""
        last = after_id
        # Durable milestones first, then the stream: a milestone is committed before it is
        # appended, so anything the stream lacks at this point sorts after what it has.
        durable = [] if fresh else await self._durable(tenant_id, run_id, last)
        pending = {event.id: event for event in durable}
        try:
            live = await self._stream_after(run_id, last)
        except Exception as exc:  # the cache is down: what follows reads the database
            _log.warning("run %s: stream unreadable, reading milestones: %s", run_id, exc)
            live = []
        for entry in live:
            pending.setdefault(entry.id, RunEvent.decode(entry.id, entry.data))
        for event_id in sorted(pending):
            event = pending[event_id]
            yield event
            last = event.id
            if event.terminal:
                return
        while True:
            try:
                entries = await self._streams.read(
                    stream_key(run_id), last, READ_BATCH, block_s=self._heartbeat_s
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The cache is down: the database still has every milestone; look there
                # at a calm pace until the stream answers again.
                _log.warning("run %s: stream unreadable, reading milestones: %s", run_id, exc)
                await asyncio.sleep(STREAM_RETRY_S)
                entries = []
            batch = [RunEvent.decode(e.id, e.data) for e in entries]
            if not batch:
                # A quiet stream may also mean a lost append or another replica's in-process
                # stream: the database has every milestone.
                batch = await self._durable(tenant_id, run_id, last)
                if not batch:
                    yield None
                    continue
            for event in batch:
                if event.id <= last:
                    continue
                yield event
                last = event.id
                if event.terminal:
                    return

    async def finished(
        self, tenant_id: str, run_id: str, *, fresh: bool = False
    ) -> tuple[Run, Message | None] | None:
        """The run and its reply once it ended (None: no such run); the caller bounds the wait.

        The stream's end wakes us; the database is asked on each wake and every `heartbeat_s`,
        since a notice can be lost and another replica's stream may be in its own process.
        `fresh`: the caller just accepted the run, so the database need not be asked first.
        """
        if not fresh:
            found = await self._store.run_reply(tenant_id, run_id)
            if found is None or found[0].status in FINISHED:
                return found
        stream = stream_key(run_id)
        while True:
            try:
                ended = await self._streams.wait_finished(stream, self._heartbeat_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("run %s: stream unreadable, asking the database: %s", run_id, exc)
                await asyncio.sleep(STREAM_RETRY_S)
                ended = False
            found = await self._store.run_reply(tenant_id, run_id)
            if found is None or found[0].status in FINISHED:
                return found
            if ended:  # a stream ended before its run is committed as ended cannot be: wait
                await asyncio.sleep(STREAM_RETRY_S)

    async def _stream_after(self, run_id: str, after_id: int) -> list[StreamEntryLike]:
        """Everything the stream holds after `after_id` (a finished run's can exceed a batch)."""
        entries: list[StreamEntryLike] = []
        while True:
            batch = await self._streams.read(stream_key(run_id), after_id, READ_BATCH)
            entries.extend(batch)
            if len(batch) < READ_BATCH:
                return entries
            after_id = batch[-1].id

    async def _durable(self, tenant_id: str, run_id: str, after_id: int) -> list[RunEvent]:
        events: list[RunEvent] = []
        while True:
            batch = await self._store.events_after(tenant_id, run_id, after_id, READ_BATCH)
            events.extend(batch)
            if len(batch) < READ_BATCH:
                return events
            after_id = batch[-1].id
