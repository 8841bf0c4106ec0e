"""An in-process topic: a bounded log with one committed cursor per consumer group."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from soma.bus.offsets import OffsetTracker
from soma.bus.port import BusError


@dataclass(frozen=True, slots=True)
class LogRecord:
    offset: int
    key: str
    value: bytes
    headers: Mapping[str, str]


class GroupCursor:
    """Where a consumer group reads (`next`) and what it has acked contiguously (`committed`)."""

    def __init__(self, start: int) -> None:
        self.next = start
        self.committed = start
        self.tracker = OffsetTracker()
        self.wake = asyncio.Event()

    def rewind(self) -> None:
        """Forget unacked reads so they are delivered again."""
        self.next = self.committed
        self.tracker = OffsetTracker()


class TopicLog:
    """Records are kept until every group acked them; publishers wait while `capacity` are kept.

    With no group yet, the newest `capacity` records are retained for the first group to join
    (older ones are discarded and counted), so an unconsumed topic never blocks its publishers.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._records: deque[LogRecord] = deque()
        self._base = 0
        self._end = 0
        self._groups: dict[str, GroupCursor] = {}
        self._space = asyncio.Event()
        self._open = False
        self.discarded = 0

    @property
    def end(self) -> int:
        return self._end

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        """Make waiting and later publishers fail instead of waiting for consumers that stopped."""
        self._open = False
        self._space.set()

    def join(self, group: str) -> GroupCursor:
        """The group's cursor; a new group starts at the oldest retained record."""
        cursor = self._groups.get(group)
        if cursor is None:
            cursor = self._groups[group] = GroupCursor(self._base)
        return cursor

    async def append(self, key: str, value: bytes, headers: Mapping[str, str]) -> None:
        while self._open and self._groups and len(self._records) >= self._capacity:
            self._space.clear()
            await self._space.wait()
        if not self._open:
            raise BusError("bus: the local bus is not running")
        self._records.append(LogRecord(self._end, key, value, headers))
        self._end += 1
        if not self._groups and len(self._records) > self._capacity:
            self._records.popleft()
            self._base += 1
            self.discarded += 1
        for cursor in self._groups.values():
            cursor.wake.set()

    def read(self, cursor: GroupCursor, limit: int) -> list[LogRecord]:
        start = cursor.next - self._base
        batch = list(itertools.islice(self._records, start, start + limit))
        cursor.next += len(batch)
        return batch

    def commit(self, cursor: GroupCursor, offset: int) -> None:
        cursor.committed = offset
        low = min(c.committed for c in self._groups.values())
        if low > self._base:
            for _ in range(low - self._base):
                self._records.popleft()
            self._base = low
            self._space.set()
