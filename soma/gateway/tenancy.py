"""Tenants and the default `assistant` agent every tenant has."""

from __future__ import annotations

from soma.core.errors import ConflictError
from soma.gateway.schemas.agents import DEFAULT_MAX_STEPS, DEFAULT_RUN_TIMEOUT_S
from soma.storage.database import Database
from soma.storage.repositories import Agent, AgentSettings, Tenant
from soma.storage.uow import UnitOfWork

DEFAULT_TENANT = "default"
ASSISTANT = "assistant"
ASSISTANT_INSTRUCTIONS = "You are a helpful assistant. Answer clearly and concisely."


def default_agent_settings() -> AgentSettings:
    return AgentSettings(
        max_steps=DEFAULT_MAX_STEPS, run_timeout_s=DEFAULT_RUN_TIMEOUT_S, concurrency="enqueue"
    )


class Tenancy:
    """Creates tenants with their assistant; knows the default (platform) tenant once started."""

    def __init__(self, database: Database, default_model: str) -> None:
        self._database = database
        self._default_model = default_model
        self._default_tenant_id: str | None = None

    @property
    def default_tenant_id(self) -> str:
        if self._default_tenant_id is None:
            raise RuntimeError("the default tenant is not known before the gateway has started")
        return self._default_tenant_id

    def set_default_tenant(self, tenant_id: str) -> None:
        self._default_tenant_id = tenant_id

    def is_platform_tenant(self, tenant_id: str) -> bool:
        return self._default_tenant_id is not None and tenant_id == self._default_tenant_id

    async def add_tenant(self, uow: UnitOfWork, name: str, *, actor: str) -> Tenant:
        """Create a tenant and its assistant in the caller's transaction; ConflictError if taken."""
        tenant = await uow.tenants.create(name)
        await self._add_assistant(uow, tenant.id)
        await uow.audit.append(
            tenant.id,
            actor=actor,
            action="tenant.create",
            resource=f"tenant:{tenant.id}",
            data={"name": name},
        )
        return tenant

    async def ensure_assistant(self, tenant_id: str) -> Agent:
        """The tenant's assistant, created now if it is missing (safe when raced)."""
        async with self._database.read() as uow:
            agent = await uow.agents.get_by_name(tenant_id, ASSISTANT)
        if agent is not None:
            return agent
        try:
            async with self._database.transaction() as uow:
                return await self._add_assistant(uow, tenant_id)
        except ConflictError:
            async with self._database.read() as uow:
                agent = await uow.agents.get_by_name(tenant_id, ASSISTANT)
            if agent is None:
                raise
            return agent

    async def _add_assistant(self, uow: UnitOfWork, tenant_id: str) -> Agent:
        return await uow.agents.create(
            tenant_id,
            name=ASSISTANT,
            instructions=ASSISTANT_INSTRUCTIONS,
            model=self._default_model,
            tools=(),
            memory=False,
            settings=default_agent_settings(),
        )
