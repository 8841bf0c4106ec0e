"""Sessions: a conversation with one agent; deleting one hides it (soft delete)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row

from soma.core.clock import utcnow
from soma.core.ids import new_id
from soma.storage.repositories.base import Page, Repository, fetch_page
from soma.storage.tables import sessions


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    tenant_id: str
    agent_id: str
    title: str | None
    metadata: dict[str, Any]
    created_at: datetime
    user: str | None = None
    """The end user it talks to (the application's name for them): whose memories it uses."""


def _session(row: Row[Any]) -> Session:
    return Session(
        id=row.id,
        tenant_id=row.tenant_id,
        agent_id=row.agent_id,
        title=row.title,
        metadata=dict(row.metadata),
        created_at=row.created_at,
        user=row.end_user,
    )


def new_session(tenant_id: str, agent_id: str, metadata: dict[str, Any] | None = None) -> Session:
    """A session not written yet: the transaction that creates it inserts its row."""
    return Session(new_id(), tenant_id, agent_id, None, dict(metadata or {}), utcnow())


_live = sessions.c.deleted_at.is_(None)


class SessionRepository(Repository):
    __slots__ = ()

    async def create(
        self,
        tenant_id: str,
        *,
        agent_id: str,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        session_id: str | None = None,
        user: str | None = None,
    ) -> Session:
        session = Session(
            id=session_id or new_id(),
            tenant_id=tenant_id,
            agent_id=agent_id,
            title=title,
            metadata=dict(metadata or {}),
            created_at=utcnow(),
            user=user,
        )
        await self._conn.execute(
            insert(sessions),
            {
                "id": session.id,
                "tenant_id": tenant_id,
                "agent_id": agent_id,
                "title": title,
                "metadata": session.metadata,
                "created_at": session.created_at,
                "end_user": user,
            },
        )
        return session

    async def get(self, tenant_id: str, session_id: str) -> Session | None:
        query = select(sessions).where(
            sessions.c.tenant_id == tenant_id, sessions.c.id == session_id, _live
        )
        row = (await self._conn.execute(query)).first()
        return None if row is None else _session(row)

    async def list(
        self,
        tenant_id: str,
        limit: int,
        cursor: str | None = None,
        *,
        agent_id: str | None = None,
    ) -> Page[Session]:
        query = select(sessions).where(sessions.c.tenant_id == tenant_id, _live)
        if agent_id is not None:
            query = query.where(sessions.c.agent_id == agent_id)
        return await fetch_page(self._conn, query, sessions.c.id, limit, cursor, _session)

    async def update(
        self,
        tenant_id: str,
        session_id: str,
        *,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Session | None:
        values: dict[str, Any] = {}
        if title is not None:
            values["title"] = title
        if metadata is not None:
            values["metadata"] = dict(metadata)
        if not values:
            return await self.get(tenant_id, session_id)
        statement = (
            update(sessions)
            .where(sessions.c.tenant_id == tenant_id, sessions.c.id == session_id, _live)
            .values(**values)
            .returning(*sessions.c)
        )
        row = (await self._conn.execute(statement)).first()
        return None if row is None else _session(row)

    async def delete(self, tenant_id: str, session_id: str) -> bool:
        """Soft delete; True when a live session of this tenant was deleted now."""
        statement = (
            update(sessions)
            .where(sessions.c.tenant_id == tenant_id, sessions.c.id == session_id, _live)
            .values(deleted_at=utcnow())
            .returning(sessions.c.id)
        )
        return (await self._conn.execute(statement)).first() is not None
