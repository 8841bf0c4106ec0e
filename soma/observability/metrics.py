"""The one Prometheus registry of a process and the metrics the orchestrator itself owns."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Owns the registry; services create their own instruments on `registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.service_up = Gauge(
            "soma_service_up",
            "1 when the service is started and healthy, else 0.",
            ["service"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "soma_http_requests_total",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "soma_http_request_duration_seconds",
            "HTTP request duration until the response started.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


LATENCY_BUCKETS = _LATENCY_BUCKETS
