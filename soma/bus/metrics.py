"""The bus's Prometheus instruments, created once per bus on the process registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from soma.observability.metrics import Metrics


class BusMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.published = Counter(
            "soma_bus_published_total",
            "Messages accepted by the bus, by logical topic.",
            ["topic"],
            registry=metrics.registry,
        )
        self.consumed = Counter(
            "soma_bus_consumed_total",
            "Handler outcomes: ok, retry (failed, will retry), dead (sent to the DLQ).",
            ["topic", "group", "outcome"],
            registry=metrics.registry,
        )
        self.lag = Gauge(
            "soma_bus_consumer_lag",
            "Messages behind the committed position of a consumer group (as far as known).",
            ["topic", "group"],
            registry=metrics.registry,
        )
