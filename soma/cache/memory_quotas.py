"""In-process quotas (embedded stack): exact within the one process that serves everything."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from soma.cache.memory import Clock, Sweeper
from soma.limits.port import Admission, Bucket, Taken


class MemoryQuotas:
    """Token buckets, pools of runs in flight and counters in dictionaries; one event loop."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float, float, int]] = {}
        """Tokens left, when, and the bucket's rate and burst (to know when it is full)."""
        self._sweeper = Sweeper(clock)
        self._pools: dict[str, dict[str, float]] = {}
        self._counters: dict[str, tuple[int, float]] = {}

    async def take(self, buckets: Sequence[Bucket]) -> Taken:
        now = self._clock()
        levels = []
        for bucket in buckets:
            tokens, at, _, _ = self._buckets.get(bucket.key, (bucket.burst, now, 0.0, 0))
            levels.append(min(bucket.burst, tokens + max(0.0, now - at) * bucket.rate_per_s))
        allowed = all(level >= 1 for level in levels)
        retry = 0.0 if allowed else max(
            (1 - level) / b.rate_per_s for b, level in zip(buckets, levels, strict=True)
            if level < 1
        )  # fmt: skip
        tight: tuple[int, int, float] | None = None
        for bucket, level in zip(buckets, levels, strict=True):
            left = level - 1 if allowed else level
            self._buckets[bucket.key] = (left, now, bucket.rate_per_s, bucket.burst)
            reset = (bucket.burst - left) / bucket.rate_per_s
            if tight is None or math.floor(left) < tight[1]:
                tight = (bucket.burst, math.floor(left), reset)
        if self._sweeper.due():
            self._forget_full(now)
        assert tight is not None
        return Taken(allowed, tight[0], max(0, tight[1]), tight[2], retry)

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled completely is the same as a missing one: forgetting it is
        # exact, and keeps one bucket per failing client address from piling up.
        full = [
            key
            for key, (tokens, at, rate, burst) in self._buckets.items()
            if tokens + (now - at) * rate >= burst
        ]
        for key in full:
            del self._buckets[key]

    async def admit(
        self, pool: str, member: str, cap: int, ttl_s: float, counter: str, budget: int | None
    ) -> Admission:
        now = self._clock()
        if budget is not None and await self.spent(counter) >= budget:
            return Admission.SPENT
        members = self._pools.setdefault(pool, {})
        if member not in members and len(members) >= cap:
            # Only a full pool needs its expired members gone (a scan, but a rare one).
            for stale in [m for m, until in members.items() if until <= now]:
                del members[stale]
            if len(members) >= cap:
                return Admission.FULL
        members[member] = now + ttl_s
        return Admission.ADMITTED

    async def leave(self, pool: str, member: str) -> None:
        self._pools.get(pool, {}).pop(member, None)

    async def spend(self, counter: str, amount: int, ttl_s: float) -> int:
        now = self._clock()
        total, until = self._counters.get(counter, (0, now + ttl_s))
        if until <= now:
            total, until = 0, now + ttl_s
        self._counters[counter] = (total + amount, until)
        return total + amount

    async def spent(self, counter: str) -> int:
        total, until = self._counters.get(counter, (0, math.inf))
        return total if until > self._clock() else 0
