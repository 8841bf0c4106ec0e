"""The event journal of one run attempt: event ids, and the live stream after commits."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from soma.runs.events import EventType, RunEvent, first_id, stream_key
from soma.runs.port import EventStreams

_log = logging.getLogger("soma.runs")


class RunJournal:
    """Owned by whoever holds the run's lease (or, for a run nobody runs, by the canceller).

    Milestones are handed to the run store, which writes them in the step's transaction;
    they are appended to the stream only after it commits, so a client never sees an event
    the database does not have.
    """

    __slots__ = ("_next", "_streams", "run_id")

    def __init__(self, streams: EventStreams, run_id: str, attempt: int) -> None:
        self._streams = streams
        self.run_id = run_id
        self._next = first_id(attempt)

    def event(self, type: EventType, data: dict[str, Any] | None = None) -> RunEvent:
        """The next event of this attempt (its id taken, nothing written yet)."""
        event = RunEvent(self._next, type, data or {})
        self._next += 1
        return event

    def reserve(self, count: int) -> int:
        """Set aside `count` ids (for events others write later); returns the first."""
        first = self._next
        self._next += count
        return first

    async def delta(self, text: str) -> None:
        await self.publish([self.event(EventType.DELTA, {"text": text})])

    async def publish(self, events: Iterable[RunEvent]) -> None:
        await publish(self._streams, self.run_id, events)


async def publish(streams: EventStreams, run_id: str, events: Iterable[RunEvent]) -> None:
    """Append committed events to the run's live stream, in one round trip.

    A failed append is logged, not raised: milestones are durable and readers fall back to
    `run_events`; a lost delta only costs liveness (`message.completed` has the full text).
    After the terminal event the stream need only outlive a grace (its milestones are durable).
    """
    batch = list(events)
    if not batch:
        return
    entries = [(event.encode(), event.id) for event in batch]
    terminal = any(event.terminal for event in batch)
    try:
        await streams.append_many(stream_key(run_id), entries, finish=terminal)
    except Exception as exc:
        _log.warning("stream append failed for run %s: %s", run_id, exc)
