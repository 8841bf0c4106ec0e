"""In-process cache adapters: one replica's KV and token buckets (streams: `memory_streams`)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from soma.cache.port import RateDecision, check_bucket, check_ttl

Clock = Callable[[], float]
"""Monotonic seconds; injectable so expiry and refill can be tested without sleeping."""

_SWEEP_INTERVAL_S = 1.0


class Sweeper:
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
        self._sweeper = Sweeper(clock)

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
        # A right-sized copy: encoders such as orjson return small bodies in 4 KiB buffers.
        self._items[key] = (bytes(memoryview(value)), expires)
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
        self._sweeper = Sweeper(clock)

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
