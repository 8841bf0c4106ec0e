"""When to retry an upstream call: jittered exponential backoff and a bounded Retry-After."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


class RetryPolicy:
    """`delay(attempt)` gives the wait before retry number `attempt`, or None to give up."""

    def __init__(
        self,
        retries: int,
        base_s: float = 0.25,
        cap_s: float = 4.0,
        max_retry_after_s: float = 10.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.retries = retries
        self.base_s = base_s
        self.cap_s = cap_s
        self.max_retry_after_s = max_retry_after_s
        self._rng = rng

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float | None:
        if attempt > self.retries:
            return None
        if retry_after_s is not None:
            # A long Retry-After is better served by a fallback model than by waiting here.
            return max(0.0, retry_after_s) if retry_after_s <= self.max_retry_after_s else None
        ceiling = min(self.cap_s, self.base_s * 2.0 ** (attempt - 1))
        # Equal jitter: never zero (so a burst still spreads out), never above the ceiling.
        return ceiling / 2 + self._rng() * ceiling / 2


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
