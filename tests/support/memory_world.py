"""Memory test fixtures: a started `UnifiedMemoryService` on the parametrized backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from soma.config.memory import MemorySettings
from soma.memory.model import NewMemory, Scope
from soma.memory.service import Remembered, UnifiedMemoryService
from soma.observability.metrics import Metrics
from soma.storage.database import Database


@asynccontextmanager
async def running_memory(
    db: Database, settings: MemorySettings | None = None
) -> AsyncIterator[UnifiedMemoryService]:
    service = UnifiedMemoryService(settings or MemorySettings(), db, Metrics())
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def tenant_with_agent(db: Database, name: str) -> Scope:
    """A tenant `name` with an agent `assistant`: the scope of its shared memories."""
    async with db.transaction() as uow:
        tenant = await uow.tenants.create(name)
        agent = await uow.agents.create(tenant.id, name="assistant", instructions="", model="local")
    return Scope(tenant.id, agent.id)


async def keep(
    memory: UnifiedMemoryService, scope: Scope, content: str, kind: str = "fact"
) -> Remembered:
    return await memory.remember(NewMemory(scope, content, kind))  # type: ignore[arg-type]
