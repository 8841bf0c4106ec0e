"""Finding a tenant's agent by id or by name."""

from __future__ import annotations

from soma.storage.repositories import Agent
from soma.storage.uow import UnitOfWork


async def find_agent(uow: UnitOfWork, tenant_id: str, ref: str) -> Agent | None:
    """Ids are tried first: they are unique, while a name could look like an id."""
    agent = await uow.agents.get(tenant_id, ref)
    if agent is None:
        agent = await uow.agents.get_by_name(tenant_id, ref)
    return agent
