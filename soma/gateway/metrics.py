"""Prometheus instruments of the gateway."""

from __future__ import annotations

from prometheus_client import Counter

from soma.observability.metrics import Metrics


class GatewayMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.auth = Counter(
            "soma_gateway_auth_total",
            "API key checks by result: ok, missing, malformed, unknown, revoked, mismatch, "
            "limited (429), error.",
            ["result"],
            registry=metrics.registry,
        )
        cache = Counter(
            "soma_gateway_key_cache_total",
            "API key verification cache lookups by result (local_hit: this process; hit, miss: "
            "the shared cache).",
            ["result"],
            registry=metrics.registry,
        )
        self.cache_hits = cache.labels("hit")
        self.cache_misses = cache.labels("miss")
        self.cache_local_hits = cache.labels("local_hit")
