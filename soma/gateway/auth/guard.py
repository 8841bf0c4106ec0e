"""The rate limit of failed authentication per client address (429 with `Retry-After`)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from soma.limits.port import Bucket, Quotas

BUCKET_PREFIX = "auth-failures:"


class FailedAuthGuard:
    """Each failed authentication takes a token from the address's bucket in the shared quotas
    (exact across replicas on Redis). An address whose bucket is empty is remembered here until
    it refills, so its next unknown keys are refused without a database lookup."""

    def __init__(
        self,
        quotas: Quotas,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 10_000,
    ) -> None:
        self._quotas = quotas
        self._rate = rate_per_s
        self._burst = burst
        self._clock = clock
        self._max = max_addresses
        self._blocked: OrderedDict[str, float] = OrderedDict()

    def blocked_for(self, address: str) -> float:
        """Seconds until `address` may fail again; 0 when it is not blocked here."""
        until = self._blocked.get(address)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._blocked[address]
            return 0.0
        return left

    async def failed(self, address: str) -> float:
        """Count one failure; seconds the address must wait, 0 while within its limit."""
        taken = await self._quotas.take([Bucket(BUCKET_PREFIX + address, self._rate, self._burst)])
        if taken.allowed:
            return 0.0
        wait = max(taken.retry_after_s, 1.0 / self._rate)
        self._blocked[address] = self._clock() + wait
        self._blocked.move_to_end(address)
        while len(self._blocked) > self._max:
            self._blocked.popitem(last=False)
        return wait


MAX_WAIT_S = 86_400.0


def retry_after(seconds: float) -> str:
    """A `Retry-After` value: whole seconds, at least 1 and at most a day."""
    return str(max(1, math.ceil(min(seconds, MAX_WAIT_S))))
