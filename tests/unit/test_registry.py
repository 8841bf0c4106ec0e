"""Start order, cycles, unknown dependencies and role selection of the ServiceRegistry."""

from __future__ import annotations

import pytest

from orchestrator.registry import RegistryError, ServiceDefinition, ServiceRegistry
from tests.support.services import RecordingService


def definition(name: str, *deps: str, critical: bool = True) -> ServiceDefinition:
    return ServiceDefinition(
        name=name,
        factory=lambda _ctx: RecordingService(name, []),
        depends_on=deps,
        critical=critical,
    )


def names(defs: list[ServiceDefinition]) -> list[str]:
    return [d.name for d in defs]


def test_topological_order_breaks_ties_by_manifest_order() -> None:
    registry = ServiceRegistry()
    registry.register_all(
        [
            definition("database"),
            definition("cache"),
            definition("bus"),
            definition("outbox", "database", "bus"),
            definition("gateway", "database", "cache"),
            definition("policy"),
        ]
    )
    assert names(registry.start_order()) == [
        "database",
        "cache",
        "bus",
        "outbox",
        "gateway",
        "policy",
    ]


def test_order_is_deterministic_when_manifest_lists_dependents_late() -> None:
    registry = ServiceRegistry()
    registry.register_all(
        [definition("worker", "bus", "database"), definition("bus"), definition("database")]
    )
    assert names(registry.start_order()) == ["bus", "database", "worker"]
    assert names(registry.start_order()) == names(registry.start_order())


def test_cycle_is_rejected_at_registration_with_its_path() -> None:
    registry = ServiceRegistry()
    with pytest.raises(RegistryError, match=r"cycle: a -> b -> c -> a"):
        registry.register_all([definition("a", "b"), definition("b", "c"), definition("c", "a")])
    assert registry.names == []


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(RegistryError, match="cycle: a -> a"):
        ServiceRegistry().register(definition("a", "a"))


def test_unknown_dependency_is_rejected_at_registration() -> None:
    registry = ServiceRegistry()
    registry.register(definition("database"))
    with pytest.raises(RegistryError, match="'outbox' depends on unknown service 'bus'"):
        registry.register(definition("outbox", "database", "bus"))
    assert registry.names == ["database"]


def test_duplicate_name_is_rejected() -> None:
    registry = ServiceRegistry()
    registry.register(definition("database"))
    with pytest.raises(RegistryError, match="registered twice"):
        registry.register(definition("database"))


def test_role_selection_runs_subset_plus_dependencies_in_order() -> None:
    registry = ServiceRegistry()
    registry.register_all(
        [
            definition("database"),
            definition("cache"),
            definition("bus"),
            definition("gateway", "database", "cache"),
            definition("conversation", "database", "bus"),
        ]
    )
    assert names(registry.start_order(["conversation"])) == ["database", "bus", "conversation"]
    assert names(registry.start_order(["gateway"])) == ["database", "cache", "gateway"]


def test_unknown_role_names_the_known_services() -> None:
    registry = ServiceRegistry()
    registry.register(definition("database"))
    with pytest.raises(RegistryError, match=r"unknown service\(s\) nope; known: database"):
        registry.start_order(["nope"])
