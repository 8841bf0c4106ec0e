"""The one protocol every platform service implements (ARCHITECTURE §3)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    STARTING = "starting"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Health:
    status: HealthStatus
    detail: str = ""

    @classmethod
    def healthy(cls, detail: str = "") -> Health:
        return cls(HealthStatus.HEALTHY, detail)

    @classmethod
    def unhealthy(cls, detail: str) -> Health:
        return cls(HealthStatus.UNHEALTHY, detail)


@runtime_checkable
class Service(Protocol):
    """Started in dependency order, stopped in reverse, probed by `/v1/health`."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def health(self) -> Health: ...


@runtime_checkable
class Drainable(Protocol):
    """A service that must finish or hand back in-flight work before the stop sequence."""

    async def drain(self) -> None: ...


@runtime_checkable
class Figures(Protocol):
    """A service with key figures for `GET /v1/admin/services` (runs in flight, pending...)."""

    async def figures(self) -> dict[str, float]: ...
