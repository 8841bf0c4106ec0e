"""Counts rate-limit outcomes on the process's metrics registry."""

from __future__ import annotations

from prometheus_client import Counter

from soma.cache.port import RateDecision, RateLimiter
from soma.observability.metrics import Metrics


class MeteredRateLimiter:
    """Delegates to a limiter and counts `allowed` / `limited` decisions."""

    def __init__(self, inner: RateLimiter, metrics: Metrics) -> None:
        self._inner = inner
        self._decisions = Counter(
            "soma_rate_limit_decisions_total",
            "Rate-limit checks by result (allowed or limited).",
            ["result"],
            registry=metrics.registry,
        )
        self._allowed = self._decisions.labels(result="allowed")
        self._limited = self._decisions.labels(result="limited")

    async def acquire(self, key: str, rate_per_s: float, burst: int, cost: int = 1) -> RateDecision:
        decision = await self._inner.acquire(key, rate_per_s, burst, cost)
        (self._allowed if decision.allowed else self._limited).inc()
        return decision
