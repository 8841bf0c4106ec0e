"""Kernel types every package may use: the Service protocol, ids, errors, envelopes, clock."""

from soma.core.service import Drainable, Health, HealthStatus, Service

__all__ = ["Drainable", "Health", "HealthStatus", "Service"]
