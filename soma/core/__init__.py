"""Kernel types every package may use: the Service protocol, ids, errors, envelopes, clock."""

from soma.core.service import Drainable, Figures, Health, HealthStatus, Service

__all__ = ["Drainable", "Figures", "Health", "HealthStatus", "Service"]
