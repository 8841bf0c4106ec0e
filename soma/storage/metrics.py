"""Prometheus instruments of the storage layer (created once, on the process registry)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from soma.observability.metrics import LATENCY_BUCKETS, Metrics


class StorageMetrics:
    def __init__(self, metrics: Metrics) -> None:
        transactions = Counter(
            "soma_db_transactions_total",
            "Write transactions by outcome (commit or rollback).",
            ["outcome"],
            registry=metrics.registry,
        )
        self.commits = transactions.labels("commit")
        self.rollbacks = transactions.labels("rollback")
        self.transaction_seconds = Histogram(
            "soma_db_transaction_duration_seconds",
            "Write transaction duration, including waiting for the SQLite write lock.",
            buckets=LATENCY_BUCKETS,
            registry=metrics.registry,
        )
