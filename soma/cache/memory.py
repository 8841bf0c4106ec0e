"""In-process cache adapters: one replica's KV, token buckets and run streams."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from soma.cache.port import (
    RateDecision,
    StreamEntry,
    check_bucket,
    check_entry_id,
    check_read,
    check_ttl,
)

Clock = Callable[[], float]
"""Monotonic seconds; injectable so expiry and refill can be tested without sleeping."""

_SWEEP_INTERVAL_S = 1.0


class _Sweeper:
    """Rate-limits full scans for expired entries to one per interval, done on writes."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._next = clock() + _SWEEP_INTERVAL_S

    def due(self) -> bool:
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + _SWEEP_INTERVAL_S
        return True


class MemoryKeyValue:
    """Dictionary with per-key expiry, checked on read and swept on write."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._items: dict[str, tuple[bytes, float]] = {}
        self._sweeper = _Sweeper(clock)

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._items[key]
            return None
        return item[0]

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        check_ttl(ttl_s)
        expires = math.inf if ttl_s is None else self._clock() + ttl_s
        self._items[key] = (bytes(value), expires)
        if self._sweeper.due():
            now = self._clock()
            for stale in [k for k, (_, exp) in self._items.items() if exp <= now]:
                del self._items[stale]

    async def delete(self, key: str) -> bool:
        item = self._items.pop(key, None)
        return item is not None and item[1] > self._clock()


class MemoryRateLimiter:
    """Exact token buckets; the lock makes them exact across threads as well as tasks."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float, float, int]] = {}
        self._sweeper = _Sweeper(clock)

    async def acquire(self, key: str, rate_per_s: float, burst: int, cost: int = 1) -> RateDecision:
        check_bucket(rate_per_s, burst, cost)
        with self._lock:
            now = self._clock()
            state = self._buckets.get(key)
            tokens = float(burst)
            if state is not None:
                elapsed = max(0.0, now - state[1])
                tokens = min(float(burst), state[0] + elapsed * rate_per_s)
            if tokens >= cost:
                tokens -= cost
                decision = RateDecision(True, math.floor(tokens), 0.0)
            else:
                decision = RateDecision(False, math.floor(tokens), (cost - tokens) / rate_per_s)
            self._buckets[key] = (tokens, now, rate_per_s, burst)
            if self._sweeper.due():
                self._drop_full(now)
            return decision

    def _drop_full(self, now: float) -> None:
        # A bucket that has refilled completely is the same as a missing one.
        full = [
            key
            for key, (tokens, at, rate, burst) in self._buckets.items()
            if tokens + (now - at) * rate >= burst
        ]
        for key in full:
            del self._buckets[key]


@dataclass(slots=True)
class _Stream:
    entries: deque[StreamEntry]
    expires_at: float
    last_id: int = 0


@dataclass(slots=True)
class _Waiters:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0


def _entry_id(entry: StreamEntry) -> int:
    return entry.id


class MemoryRunStreams:
    """Bounded, expiring streams; blocked readers wake on the append itself, not by polling."""

    def __init__(self, maxlen: int, ttl_s: float, clock: Clock = time.monotonic) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen!r}")
        check_ttl(ttl_s)
        self._maxlen = maxlen
        self._ttl_s = ttl_s
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._waiters: dict[str, _Waiters] = {}
        self._sweeper = _Sweeper(clock)

    def _live(self, stream: str) -> _Stream | None:
        state = self._streams.get(stream)
        if state is not None and state.expires_at <= self._clock():
            del self._streams[stream]
            return None
        return state

    async def append(self, stream: str, data: bytes, entry_id: int | None = None) -> int:
        check_entry_id(entry_id)
        state = self._live(stream)
        if state is None:
            state = self._streams[stream] = _Stream(deque(maxlen=self._maxlen), 0.0)
        if entry_id is None:
            state.last_id += 1
        elif entry_id <= state.last_id:
            raise ValueError(f"entry id {entry_id} is not above the last id {state.last_id}")
        else:
            state.last_id = entry_id
        state.entries.append(StreamEntry(state.last_id, bytes(data)))
        state.expires_at = self._clock() + self._ttl_s
        waiters = self._waiters.pop(stream, None)
        if waiters is not None:
            waiters.event.set()
        if self._sweeper.due():
            now = self._clock()
            for name in [n for n, s in self._streams.items() if s.expires_at <= now]:
                del self._streams[name]
        return state.last_id

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
        self._streams.pop(stream, None)
