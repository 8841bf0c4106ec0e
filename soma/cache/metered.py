"""Cache instruments on the process's metrics registry: the in-process streams' memory."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from soma.cache.memory_streams import MemoryRunStreams
from soma.observability.metrics import Metrics


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
