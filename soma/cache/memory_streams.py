"""In-process run streams: bounded per stream, by a grace after `finish`, and by bytes overall."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from soma.cache.memory import Clock, Sweeper
from soma.cache.port import StreamEntry, check_entry_id, check_read, check_ttl

ENTRY_OVERHEAD_BYTES = 120
"""What an entry costs beyond its data (entry object, bytes header, deque slot), estimated."""

EvictionHook = Callable[[str], object]
"""Told why a stream went: `expired`, `finished_cap` or `live_cap` (byte cap)."""


def _no_hook(reason: str) -> None:
    return None


@dataclass(slots=True)
class _Stream:
    entries: deque[StreamEntry]
    expires_at: float
    last_id: int = 0
    size: int = 0
    finished: bool = False


@dataclass(slots=True)
class _Waiters:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0


def _entry_id(entry: StreamEntry) -> int:
    return entry.id


def _cost(entry: StreamEntry) -> int:
    return len(entry.data) + ENTRY_OVERHEAD_BYTES


class MemoryRunStreams:
    """Bounded, expiring streams; blocked readers wake on the append itself, not by polling.

    A finished stream goes `grace_s` after `finish`; when all streams together pass
    `max_bytes`, the oldest finished ones go first, then the oldest unfinished ones.
    """

    def __init__(
        self,
        maxlen: int,
        ttl_s: float,
        clock: Clock = time.monotonic,
        *,
        grace_s: float = 30.0,
        max_bytes: int = 64 * 1024 * 1024,
        on_evict: EvictionHook = _no_hook,
    ) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen!r}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes!r}")
        check_ttl(ttl_s)
        check_ttl(grace_s)
        self._maxlen = maxlen
        self._ttl_s = ttl_s
        self._grace_s = grace_s
        self._max_bytes = max_bytes
        self._clock = clock
        self.on_evict = on_evict
        # Insertion order is age: the first key is the oldest stream (or finished stream).
        self._streams: dict[str, _Stream] = {}
        self._finished: dict[str, None] = {}
        self._bytes = 0
        self._waiters: dict[str, _Waiters] = {}
        self._ended: dict[str, asyncio.Event] = {}
        self._sweeper = Sweeper(clock)

    @property
    def total_bytes(self) -> int:
        """Estimated bytes held by every stream together."""
        return self._bytes

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def _drop(self, stream: str, reason: str | None) -> None:
        state = self._streams.pop(stream, None)
        if state is None:
            return
        self._finished.pop(stream, None)
        self._bytes -= state.size
        if reason is not None:
            self.on_evict(reason)

    def _live(self, stream: str) -> _Stream | None:
        state = self._streams.get(stream)
        if state is not None and state.expires_at <= self._clock():
            self._drop(stream, "expired")
            return None
        return state

    async def append(self, stream: str, data: bytes, entry_id: int | None = None) -> int:
        check_entry_id(entry_id)
        state = self._live(stream)
        if state is None:
            state = self._streams[stream] = _Stream(deque(), 0.0)
        if entry_id is None:
            state.last_id += 1
        elif entry_id <= state.last_id:
            raise ValueError(f"entry id {entry_id} is not above the last id {state.last_id}")
        else:
            state.last_id = entry_id
        # A copy of exactly its size: orjson's output keeps a 4 KiB buffer behind even a
        # 50-byte body, and `bytes(data)` would keep that very object.
        entry = StreamEntry(state.last_id, bytes(memoryview(data)))
        if len(state.entries) >= self._maxlen:
            self._trim_oldest(state)
        state.entries.append(entry)
        state.size += _cost(entry)
        self._bytes += _cost(entry)
        if not state.finished:
            state.expires_at = self._clock() + self._ttl_s
        waiters = self._waiters.pop(stream, None)
        if waiters is not None:
            waiters.event.set()
        if self._sweeper.due():
            self.sweep()
        if self._bytes > self._max_bytes:
            self._evict(keep=stream)
        return state.last_id

    async def append_many(
        self, stream: str, entries: Sequence[tuple[bytes, int]], *, finish: bool = False
    ) -> None:
        for data, entry_id in entries:
            await self.append(stream, data, entry_id)
        if finish:
            await self.finish(stream)

    def _trim_oldest(self, state: _Stream) -> None:
        dropped = state.entries.popleft()
        state.size -= _cost(dropped)
        self._bytes -= _cost(dropped)

    def sweep(self) -> None:
        """Drop every expired stream (appends do it at most once a second by themselves)."""
        now = self._clock()
        for name in [n for n, s in self._streams.items() if s.expires_at <= now]:
            self._drop(name, "expired")

    def _evict(self, keep: str) -> None:
        """Bring the total under the cap; `keep` (just appended to) is trimmed, not dropped."""
        for name in list(self._finished):
            if self._bytes <= self._max_bytes:
                return
            if name != keep:
                self._drop(name, "finished_cap")
        for name in list(self._streams):
            if self._bytes <= self._max_bytes:
                return
            if name != keep:
                self._drop(name, "live_cap")
        state = self._streams[keep]
        while self._bytes > self._max_bytes and len(state.entries) > 1:
            self._trim_oldest(state)

    async def wait_finished(self, stream: str, timeout_s: float) -> bool:
        state = self._live(stream)
        if state is not None and state.finished:
            return True
        event = self._ended.setdefault(stream, asyncio.Event())
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            if self._ended.get(stream) is event and not event.is_set():
                self._ended.pop(stream, None)

    async def finish(self, stream: str) -> None:
        ended = self._ended.pop(stream, None)
        if ended is not None:
            ended.set()
        state = self._live(stream)
        if state is None or state.finished:
            return
        state.finished = True
        self._finished[stream] = None
        state.expires_at = min(state.expires_at, self._clock() + self._grace_s)

    def _after(self, stream: str, after_id: int, limit: int) -> list[StreamEntry]:
        state = self._live(stream)
        if state is None or after_id >= state.last_id:
            return []
        entries = state.entries
        # Ids increase but may have gaps (explicit ids), so search rather than compute.
        start = bisect.bisect_right(entries, after_id, key=_entry_id)
        return list(itertools.islice(entries, start, start + limit))

    async def read(
        self, stream: str, after_id: int, limit: int = 100, block_s: float = 0
    ) -> list[StreamEntry]:
        check_read(after_id, limit, block_s)
        found = self._after(stream, after_id, limit)
        if found or block_s == 0:
            return found
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_s
        while not found:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            waiters = self._waiters.setdefault(stream, _Waiters())
            waiters.count += 1
            try:
                async with asyncio.timeout(remaining):
                    await waiters.event.wait()
            except TimeoutError:
                return self._after(stream, after_id, limit)
            finally:
                waiters.count -= 1
                if waiters.count == 0 and self._waiters.get(stream) is waiters:
                    del self._waiters[stream]
            found = self._after(stream, after_id, limit)
        return found

    async def last_id(self, stream: str) -> int:
        state = self._live(stream)
        return 0 if state is None else state.last_id

    async def delete(self, stream: str) -> None:
        self._drop(stream, None)
