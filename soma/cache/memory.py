"""In-process KV of one replica and the sweep it shares with `memory_quotas`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from soma.cache.port import check_ttl

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
