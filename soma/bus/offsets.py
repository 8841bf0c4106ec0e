"""Commit positions from out-of-order completions: only a contiguous done prefix counts."""

from __future__ import annotations

from collections import deque


class OffsetTracker:
    """Offsets of one partition, added in increasing order (gaps allowed), done in any order."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._commit: int | None = None
        self._last: int | None = None

    def add(self, offset: int) -> None:
        if self._last is not None and offset <= self._last:
            raise ValueError(f"offset {offset} is not after {self._last}")
        self._pending.append(offset)
        self._last = offset

    @property
    def last_added(self) -> int | None:
        return self._last

    def complete(self, offset: int) -> bool:
        """Mark `offset` done; True when the committable position moved."""
        self._done.add(offset)
        moved = False
        while self._pending and self._pending[0] in self._done:
            head = self._pending.popleft()
            self._done.discard(head)
            self._commit = head + 1
            moved = True
        return moved

    @property
    def committable(self) -> int | None:
        """The next offset to consume after everything before it is done (Kafka commit value)."""
        return self._commit

    @property
    def in_flight(self) -> int:
        return len(self._pending)
