"""Prometheus instruments of the LLM layer, registered once on the process registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
        self.retry_waits = Counter(
            "soma_llm_retry_waits_total",
            "Waits of a request whose whole chain was unavailable before its first token,"
            " by requested model and reason (unreachable, timeout, server_error, rate_limited,"
            " circuit_open).",
            ["model", "reason"],
            registry=registry,
        )
        self.waiting = Gauge(
            "soma_llm_waiting_requests",
            "Requests currently waiting for their model's upstream to answer again.",
            ["model"],
            registry=registry,
        )
        self.window_exhausted = Counter(
            "soma_llm_retry_window_exhausted_total",
            "Requests that failed because the upstream stayed unavailable for the retry window.",
            ["model"],
            registry=registry,
        )
        self.probes = Counter(
            "soma_llm_breaker_probes_total",
            "Probes of an open circuit's upstream (no tokens spent), by result (ok, unavailable).",
            ["model", "result"],
            registry=registry,
        )
        self.circuit_open = Gauge(
            "soma_llm_circuit_open",
            "1 while the model's circuit breaker is open (calls fail fast and wait), else 0.",
            ["model"],
            registry=registry,
        )
