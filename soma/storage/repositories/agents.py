"""Agents: named per tenant, with instructions, model, tools, memory switch and settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from soma.core.clock import utcnow
from soma.core.errors import ConflictError
from soma.core.ids import new_id
from soma.storage.repositories.base import Page, Repository, fetch_page, insert_or_ignore
from soma.storage.tables import agents


@dataclass(frozen=True, slots=True)
class AgentSettings:
    max_steps: int = 8
    run_timeout_s: float = 300.0
    concurrency: Literal["enqueue", "reject"] = "enqueue"
    metadata: dict[str, Any] = field(default_factory=dict)
    require_approval: tuple[str, ...] = ()
    """Tool name patterns whose calls wait for a person's approval (the policy decides)."""
    recall_k: int | None = None
    """Memories recalled per turn when memory is on; None means `memory.recall_k`."""
    recall_budget_tokens: int | None = None
    """Prompt tokens the recalled memories may take; None means `memory.recall_budget_tokens`."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentSettings:
        defaults = cls()
        return cls(
            max_steps=int(data.get("max_steps", defaults.max_steps)),
            run_timeout_s=float(data.get("run_timeout_s", defaults.run_timeout_s)),
            concurrency="reject" if data.get("concurrency") == "reject" else "enqueue",
            metadata=dict(data.get("metadata") or {}),
            require_approval=tuple(str(p) for p in data.get("require_approval") or ()),
            recall_k=_optional_int(data.get("recall_k")),
            recall_budget_tokens=_optional_int(data.get("recall_budget_tokens")),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    tenant_id: str
    name: str
    instructions: str
    model: str
    tools: tuple[str, ...]
    memory: bool
    settings: AgentSettings
    created_at: datetime
    updated_at: datetime


def _agent(row: Row[Any]) -> Agent:
    return Agent(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        instructions=row.instructions,
        model=row.model,
        tools=tuple(row.tools),
        memory=bool(row.memory),
        settings=AgentSettings.from_json(row.settings),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class AgentRepository(Repository):
    __slots__ = ()

    async def create(
        self,
        tenant_id: str,
        *,
        name: str,
        instructions: str,
        model: str,
        tools: Sequence[str] = (),
        memory: bool = False,
        settings: AgentSettings | None = None,
        agent_id: str | None = None,
    ) -> Agent:
        """Raises ConflictError when the tenant already has an agent of that name."""
        now = utcnow()
        agent = Agent(
            id=agent_id or new_id(),
            tenant_id=tenant_id,
            name=name,
            instructions=instructions,
            model=model,
            tools=tuple(tools),
            memory=memory,
            settings=settings or AgentSettings(),
            created_at=now,
            updated_at=now,
        )
        statement = insert_or_ignore(self._conn, agents, ["tenant_id", "name"]).returning(
            agents.c.id
        )
        values = {
            "id": agent.id,
            "tenant_id": tenant_id,
            "name": name,
            "instructions": instructions,
            "model": model,
            "tools": list(agent.tools),
            "memory": memory,
            "settings": agent.settings.to_json(),
            "created_at": now,
            "updated_at": now,
        }
        if (await self._conn.execute(statement, values)).first() is None:
            raise ConflictError(f"an agent named {name!r} already exists")
        return agent

    async def get(self, tenant_id: str, agent_id: str) -> Agent | None:
        query = select(agents).where(agents.c.tenant_id == tenant_id, agents.c.id == agent_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else _agent(row)

    async def get_by_name(self, tenant_id: str, name: str) -> Agent | None:
        query = select(agents).where(agents.c.tenant_id == tenant_id, agents.c.name == name)
        row = (await self._conn.execute(query)).first()
        return None if row is None else _agent(row)

    async def list(self, tenant_id: str, limit: int, cursor: str | None = None) -> Page[Agent]:
        query = select(agents).where(agents.c.tenant_id == tenant_id)
        return await fetch_page(self._conn, query, agents.c.id, limit, cursor, _agent)

    async def update(
        self,
        tenant_id: str,
        agent_id: str,
        *,
        name: str | None = None,
        instructions: str | None = None,
        model: str | None = None,
        tools: Sequence[str] | None = None,
        memory: bool | None = None,
        settings: AgentSettings | None = None,
    ) -> Agent | None:
        """Change the given fields; None when the agent does not exist for this tenant."""
        values: dict[str, Any] = {"updated_at": utcnow()}
        if name is not None:
            values["name"] = name
        if instructions is not None:
            values["instructions"] = instructions
        if model is not None:
            values["model"] = model
        if tools is not None:
            values["tools"] = list(tools)
        if memory is not None:
            values["memory"] = memory
        if settings is not None:
            values["settings"] = settings.to_json()
        statement = (
            update(agents)
            .where(agents.c.tenant_id == tenant_id, agents.c.id == agent_id)
            .values(**values)
            .returning(*agents.c)
        )
        try:
            row = (await self._conn.execute(statement)).first()
        except IntegrityError as exc:
            raise ConflictError(f"an agent named {name!r} already exists") from exc
        return None if row is None else _agent(row)

    async def delete(self, tenant_id: str, agent_id: str) -> bool:
        statement = (
            delete(agents)
            .where(agents.c.tenant_id == tenant_id, agents.c.id == agent_id)
            .returning(agents.c.id)
        )
        return (await self._conn.execute(statement)).first() is not None
