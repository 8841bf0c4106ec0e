"""Chooses the bus adapter from configuration; no fallback between backends."""

from __future__ import annotations

from soma.bus.kafka import KafkaBus
from soma.bus.local import LocalBus
from soma.bus.port import Bus
from soma.config.settings import Settings
from soma.observability.metrics import Metrics


def create_bus(settings: Settings, metrics: Metrics) -> Bus:
    """The configured adapter as a `Service` named `bus`; start it to connect."""
    backend = settings.bus.backend
    if backend == "local":
        return LocalBus(settings.bus, metrics)
    if backend == "kafka":
        return KafkaBus(settings.bus, metrics)
    raise ValueError(f"bus: unknown backend {backend!r}")
