"""Build the one HTTP app around a started database, cache and GatewayService, in process.

async with running_gateway(gateway_settings(tmp_path, database_url)) as gw:
    async with gw.client(gw.admin_key) as http:
        await http.get("/v1/agents")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from opentelemetry.trace import NoOpTracer

from orchestrator.app import create_app
from soma.cache.service import CacheService, create_cache
from soma.config import Settings
from soma.core import HealthStatus, Service
from soma.gateway.service import GatewayService
from soma.limits.governor import Limits
from soma.limits.source import StoredOverrides
from soma.observability.metrics import Metrics
from soma.storage import DatabaseService

ExtraRouters = Callable[[DatabaseService, CacheService], Sequence[APIRouter]]


def gateway_settings(
    tmp_path: Path, database_url: str, cache_url: str = "memory://", **overrides: Any
) -> Settings:
    """Settings for an in-process gateway; `overrides` are top-level Settings fields."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database": {"url": database_url, "pool_size": 5},
        "cache": {"url": cache_url, "max_connections": 16},
        "observability": {"access_log": False},
    }
    values.update(overrides)
    return Settings(**values)


class ServicesHealth:
    """The orchestrator's HealthView over a fixed list of started services."""

    def __init__(self, services: Sequence[Service]) -> None:
        self._services = services

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return True

    async def services(self, credentials: str | None, client: str) -> dict[str, Any] | None:
        return None  # the orchestrator's view; this harness has no orchestrator

    async def report(self, credentials: str | None = None, client: str = "") -> dict[str, Any]:
        services: dict[str, Any] = {}
        healthy = True
        for service in self._services:
            health = await service.health()
            healthy = healthy and health.status == HealthStatus.HEALTHY
            services[service.name] = {
                "status": str(health.status),
                "critical": True,
                "detail": health.detail,
            }
        return {"status": "healthy" if healthy else "unhealthy", "services": services}


@dataclass
class GatewayHarness:
    settings: Settings
    metrics: Metrics
    database: DatabaseService
    cache: CacheService
    gateway: GatewayService
    app: FastAPI

    @property
    def admin_key(self) -> str:
        """The bootstrap admin key, read back from its file."""
        return self.settings.bootstrap_key_file.read_text().strip()

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://gateway.test",
            headers=headers,
        )


def build_gateway(
    settings: Settings,
    metrics: Metrics,
    database: DatabaseService,
    cache: CacheService,
    extra_routers: ExtraRouters | None = None,
) -> tuple[GatewayService, FastAPI]:
    """A (not yet started) GatewayService and the app serving its routers."""
    extra = extra_routers(database, cache) if extra_routers is not None else ()
    limits = Limits(settings.limits, cache.quotas, StoredOverrides(database.database))
    gateway = GatewayService(
        settings, metrics, database.database, cache.kv, cache.quotas, extra_routers=extra,
        limits=limits,
    )  # fmt: skip
    health = ServicesHealth([database, cache, gateway])
    app = create_app(health, metrics, NoOpTracer(), gateway.routers(), access_log=False)
    return gateway, app


@asynccontextmanager
async def running_gateway(
    settings: Settings, extra_routers: ExtraRouters | None = None
) -> AsyncIterator[GatewayHarness]:
    """Start database (migrated), cache and gateway (bootstrapped); stop them afterwards."""
    metrics = Metrics()
    database = DatabaseService(settings, metrics)
    cache = create_cache(settings, metrics)
    await database.start()
    try:
        await cache.start()
        try:
            gateway, app = build_gateway(settings, metrics, database, cache, extra_routers)
            await gateway.start()
            try:
                yield GatewayHarness(settings, metrics, database, cache, gateway, app)
            finally:
                await gateway.stop()
        finally:
            await cache.stop()
    finally:
        await database.stop()


@dataclass(frozen=True)
class TenantKeys:
    tenant_id: str
    admin_key: str
    chat_key: str


async def new_tenant(platform: httpx.AsyncClient, name: str) -> TenantKeys:
    """Create a tenant through the admin API, with one admin and one chat key of its own."""
    created = await platform.post("/v1/admin/tenants", json={"name": name})
    assert created.status_code == 201, created.text
    tenant_id = created.json()["id"]
    keys = []
    for scopes in (["admin", "chat"], ["chat"]):
        body = {"name": f"{name}-{'-'.join(scopes)}", "scopes": scopes, "tenant_id": tenant_id}
        issued = await platform.post("/v1/admin/keys", json=body)
        assert issued.status_code == 201, issued.text
        keys.append(issued.json()["key"])
    return TenantKeys(tenant_id=tenant_id, admin_key=keys[0], chat_key=keys[1])
