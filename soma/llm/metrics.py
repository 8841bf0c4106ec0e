"""Prometheus instruments of the LLM layer, registered once on the process registry."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from soma.observability.metrics import Metrics

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class LLMMetrics:
    """Create once per `Metrics` (per process): instruments cannot be registered twice."""

    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.requests = Counter(
            "soma_llm_requests_total",
            "LLM requests per model and provider by outcome"
            " (ok, unavailable, circuit_open, rejected, interrupted, cancelled).",
            ["model", "provider", "outcome"],
            registry=registry,
        )
        self.tokens = Counter(
            "soma_llm_tokens_total",
            "Tokens reported by the backend, per model; direction in=prompt, out=completion.",
            ["model", "direction"],
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "soma_llm_time_to_first_token_seconds",
            "From the router call to the first streamed chunk (fallback attempts included).",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "soma_llm_request_duration_seconds",
            "From the router call to the end of a completed stream.",
            ["model"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
