"""ServiceRegistry: definitions, dependency order, role selection and per-service state."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from soma.config import Settings
from soma.core import Health, HealthStatus, Service
from soma.observability.metrics import Metrics

S = TypeVar("S")


class RegistryError(Exception):
    """A manifest that cannot be ordered: unknown dependency, cycle, duplicate, unknown role."""


class ServiceContext:
    """What a factory may use: the settings, the metrics registry and services built before it."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._built: dict[str, Service] = {}

    def get(self, name: str, kind: type[S]) -> S:
        service = self._built.get(name)
        if service is None:
            raise RegistryError(f"service {name!r} is not built yet; declare it in depends_on")
        if not isinstance(service, kind):
            raise RegistryError(
                f"service {name!r} is {type(service).__name__}, not {kind.__name__}"
            )
        return service

    def add(self, service: Service) -> None:
        self._built[service.name] = service


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    factory: Callable[[ServiceContext], Service]
    depends_on: tuple[str, ...] = ()
    critical: bool = True
    describe: Callable[[Settings], str] = field(default=lambda _settings: "")
    """One line for the `--dry-run` plan: the backend this service will use."""


@dataclass
class ServiceState:
    definition: ServiceDefinition
    service: Service | None = None
    status: HealthStatus = HealthStatus.STOPPED
    detail: str = ""
    attempts: int = 0

    @property
    def name(self) -> str:
        return self.definition.name

    def report(self, health: Health) -> None:
        self.status = health.status
        self.detail = health.detail


class ServiceRegistry:
    """Definitions in manifest order; validates the graph as each one is registered."""

    def __init__(self) -> None:
        self._definitions: dict[str, ServiceDefinition] = {}

    def register(self, definition: ServiceDefinition) -> None:
        self.register_all([definition])

    def register_all(self, definitions: Iterable[ServiceDefinition]) -> None:
        """Add a batch atomically; unknown dependencies and cycles are rejected here."""
        candidate = dict(self._definitions)
        for definition in definitions:
            if definition.name in candidate:
                raise RegistryError(f"service {definition.name!r} is registered twice")
            candidate[definition.name] = definition
        for definition in candidate.values():
            for dependency in definition.depends_on:
                if dependency not in candidate:
                    raise RegistryError(
                        f"service {definition.name!r} depends on unknown service {dependency!r}"
                    )
        cycle = _find_cycle(candidate)
        if cycle:
            raise RegistryError(f"dependency cycle: {' -> '.join(cycle)}")
        self._definitions = candidate

    @property
    def names(self) -> list[str]:
        return list(self._definitions)

    def definition(self, name: str) -> ServiceDefinition:
        return self._definitions[name]

    def start_order(self, selected: Sequence[str] | None = None) -> list[ServiceDefinition]:
        """Topological order of the selection plus its dependencies; ties in manifest order."""
        wanted = self._closure(selected)
        position = {name: index for index, name in enumerate(self._definitions)}
        indegree = {name: 0 for name in wanted}
        dependents: dict[str, list[str]] = {name: [] for name in wanted}
        for name in wanted:
            for dependency in self._definitions[name].depends_on:
                indegree[name] += 1
                dependents[dependency].append(name)
        ready = [(position[name], name) for name, degree in indegree.items() if degree == 0]
        heapq.heapify(ready)
        order: list[ServiceDefinition] = []
        while ready:
            _, name = heapq.heappop(ready)
            order.append(self._definitions[name])
            for dependent in dependents[name]:
                indegree[dependent] -= 1
                if indegree[dependent] == 0:
                    heapq.heappush(ready, (position[dependent], dependent))
        return order

    def _closure(self, selected: Sequence[str] | None) -> set[str]:
        if selected is None:
            return set(self._definitions)
        unknown = [name for name in selected if name not in self._definitions]
        if unknown:
            known = ", ".join(self._definitions) or "none"
            raise RegistryError(f"unknown service(s) {', '.join(unknown)}; known: {known}")
        wanted: set[str] = set()
        stack = list(selected)
        while stack:
            name = stack.pop()
            if name not in wanted:
                wanted.add(name)
                stack.extend(self._definitions[name].depends_on)
        return wanted


def _find_cycle(definitions: dict[str, ServiceDefinition]) -> list[str]:
    """A dependency cycle as a path (first name repeated at the end), or [] if there is none."""
    done: set[str] = set()
    for root in definitions:
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            name, index = stack.pop()
            if index == 0:
                if name in on_path:
                    return [*path[path.index(name) :], name]
                if name in done:
                    continue
                path.append(name)
                on_path.add(name)
            deps = definitions[name].depends_on
            if index < len(deps):
                stack.append((name, index + 1))
                stack.append((deps[index], 0))
            else:
                done.add(name)
                on_path.discard(path.pop())
    return []
