"""Cache instruments on the process's metrics registry: rate-limit outcomes, stream memory."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from soma.cache.memory_streams import MemoryRunStreams
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


def meter_streams(streams: MemoryRunStreams, metrics: Metrics) -> None:
    """Expose the in-process streams' size and count why streams were dropped."""
    Gauge(
        "soma_cache_stream_bytes",
        "Estimated bytes held by the in-process run streams (bounded by cache.stream_max_bytes).",
        registry=metrics.registry,
    ).set_function(lambda: streams.total_bytes)
    Gauge(
        "soma_cache_streams",
        "In-process run streams currently held.",
        registry=metrics.registry,
    ).set_function(lambda: streams.stream_count)
    evictions = Counter(
        "soma_cache_stream_evictions_total",
        "In-process run streams dropped before anyone deleted them, by reason"
        " (expired, finished_cap, live_cap).",
        ["reason"],
        registry=metrics.registry,
    )
    streams.on_evict = lambda reason: evictions.labels(reason).inc()
