"""The platform's services and their dependencies, in one list (ARCHITECTURE §3)."""

from __future__ import annotations

from orchestrator.registry import ServiceDefinition, ServiceRegistry


def definitions() -> list[ServiceDefinition]:
    return []


def build_registry() -> ServiceRegistry:
    registry = ServiceRegistry()
    registry.register_all(definitions())
    return registry
