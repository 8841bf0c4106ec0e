"""The memories table, for both backends (SQLAlchemy Core); only search differs per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from soma.memory.embedder import Vectors
from soma.memory.model import Memory, Scope
from soma.storage.repositories.base import Page, check_limit, insert_or_ignore
from soma.storage.tables import memories, memory_ingests

COLUMNS = tuple(c for c in memories.c if c.name != "embedding")
"""Everything but the vector: what lists, exports and recall return."""


def memory_of(row: Any) -> Memory:
    """A row of `COLUMNS` (more columns may follow)."""
    return Memory(
        id=row.id,
        tenant_id=row.tenant_id,
        agent_id=row.agent_id,
        user=row.end_user,
        kind=row.kind,
        content=row.content,
        tags=tuple(row.tags),
        source=row.source,
        source_id=row.source_id,
        embedding_model=row.embedding_model,
        created_at=row.created_at,
        superseded_by=row.superseded_by,
        superseded_at=row.superseded_at,
    )


def vector_of(value: Any) -> Vectors:
    """A stored embedding as float32: bytes on SQLite, a pgvector value on PostgreSQL."""
    if isinstance(value, bytes | memoryview):
        return np.frombuffer(value, dtype=np.float32)
    return np.asarray(value, dtype=np.float32)


def _stored(conn: AsyncConnection, vector: Vectors) -> Any:
    return vector if conn.dialect.name == "postgresql" else vector.astype(np.float32).tobytes()


def in_scope(scope: Scope, *, shared: bool) -> list[Any]:
    """Filters of one scope; with `shared`, the agent's shared memories belong to it too."""
    c = memories.c
    where = [c.tenant_id == scope.tenant_id, c.agent_id == scope.agent_id]
    if scope.user is None:
        where.append(c.end_user.is_(None))
    elif shared:
        where.append((c.end_user == scope.user) | c.end_user.is_(None))
    else:
        where.append(c.end_user == scope.user)
    return where


async def insert(
    conn: AsyncConnection,
    memory: Memory,
    vector: Vectors,
    supersedes: Sequence[str],
) -> None:
    """Write the memory; the live memories it replaces point at it from now on."""
    await conn.execute(
        memories.insert(),
        {
            "id": memory.id,
            "tenant_id": memory.tenant_id,
            "agent_id": memory.agent_id,
            "end_user": memory.user,
            "kind": memory.kind,
            "content": memory.content,
            "tags": list(memory.tags),
            "source": memory.source,
            "source_id": memory.source_id,
            "embedding": _stored(conn, vector),
            "embedding_model": memory.embedding_model,
            "embedding_dim": int(vector.shape[0]),
            "created_at": memory.created_at,
        },
    )
    if supersedes:
        await conn.execute(
            update(memories)
            .where(
                memories.c.tenant_id == memory.tenant_id,
                memories.c.id.in_(supersedes),
                memories.c.superseded_by.is_(None),
            )
            .values(superseded_by=memory.id, superseded_at=memory.created_at)
        )


async def mark_ingested(conn: AsyncConnection, tenant_id: str, run_id: str, at: datetime) -> bool:
    """Claim a run for the pipeline; False when a delivery before this one handled it."""
    statement = insert_or_ignore(conn, memory_ingests, ["run_id"]).values(
        run_id=run_id, tenant_id=tenant_id, stored=0, created_at=at
    )
    return bool((await conn.execute(statement)).rowcount)


async def ingested(conn: AsyncConnection, run_id: str) -> bool:
    query = select(memory_ingests.c.run_id).where(memory_ingests.c.run_id == run_id)
    return (await conn.execute(query)).first() is not None


async def count_ingested(conn: AsyncConnection, run_id: str, stored: int) -> None:
    await conn.execute(
        update(memory_ingests).where(memory_ingests.c.run_id == run_id).values(stored=stored)
    )


async def get(conn: AsyncConnection, tenant_id: str, memory_id: str) -> Memory | None:
    query = select(*COLUMNS).where(memories.c.tenant_id == tenant_id, memories.c.id == memory_id)
    row = (await conn.execute(query)).first()
    return None if row is None else memory_of(row)


def _filtered(tenant_id: str, agent_id: str | None, user: str | None) -> list[Any]:
    where: list[Any] = [memories.c.tenant_id == tenant_id]
    if agent_id is not None:
        where.append(memories.c.agent_id == agent_id)
    if user is not None:
        where.append(memories.c.end_user == user)
    return where


async def newest(
    conn: AsyncConnection,
    tenant_id: str,
    limit: int,
    cursor: str | None,
    *,
    agent_id: str | None = None,
    user: str | None = None,
) -> Page[Memory]:
    """Live memories, newest first (ids are time-ordered); `cursor` is the last id seen."""
    check_limit(limit)
    where = [*_filtered(tenant_id, agent_id, user), memories.c.superseded_by.is_(None)]
    if cursor is not None:
        where.append(memories.c.id < cursor)
    query = select(*COLUMNS).where(*where).order_by(memories.c.id.desc()).limit(limit + 1)
    rows = (await conn.execute(query)).all()
    items = [memory_of(row) for row in rows[:limit]]
    return Page(items, items[-1].id if len(rows) > limit else None)


async def delete_one(conn: AsyncConnection, tenant_id: str, memory_id: str) -> bool:
    statement = delete(memories).where(
        memories.c.tenant_id == tenant_id, memories.c.id == memory_id
    )
    return bool((await conn.execute(statement)).rowcount)


async def delete_user(
    conn: AsyncConnection, tenant_id: str, user: str, agent_id: str | None = None
) -> list[str]:
    """Every memory of one end user (superseded ones too); returns their ids."""
    statement = (
        delete(memories).where(*_filtered(tenant_id, agent_id, user)).returning(memories.c.id)
    )
    return [row[0] for row in (await conn.execute(statement)).all()]


async def export(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    agent_id: str | None = None,
    user: str | None = None,
) -> AsyncIterator[Memory]:
    """Every memory (superseded ones too, for their history), oldest first."""
    query = select(*COLUMNS).where(*_filtered(tenant_id, agent_id, user)).order_by(memories.c.id)
    result = await conn.stream(query.execution_options(yield_per=500))
    async for row in result:
        yield memory_of(row)


async def live_with_vectors(
    conn: AsyncConnection, model: str
) -> AsyncIterator[tuple[Memory, Vectors]]:
    """Every live memory embedded by `model`, with its vector (loads the in-process index)."""
    query = select(*COLUMNS, memories.c.embedding).where(
        memories.c.superseded_by.is_(None), memories.c.embedding_model == model
    )
    result = await conn.stream(query.execution_options(yield_per=2_000))
    async for row in result:
        yield memory_of(row), vector_of(row.embedding)


async def stale(conn: AsyncConnection, model: str, limit: int) -> list[tuple[str, str]]:
    """`(id, content)` of memories embedded by another model than `model`."""
    query = (
        select(memories.c.id, memories.c.content)
        .where(memories.c.embedding_model != model)
        .order_by(memories.c.id)
        .limit(limit)
    )
    return [(row.id, row.content) for row in (await conn.execute(query)).all()]


async def set_embedding(
    conn: AsyncConnection, memory_id: str, vector: Vectors, model: str
) -> Memory | None:
    statement = (
        update(memories)
        .where(memories.c.id == memory_id)
        .values(
            embedding=_stored(conn, vector),
            embedding_model=model,
            embedding_dim=int(vector.shape[0]),
        )
        .returning(*COLUMNS)
    )
    row = (await conn.execute(statement)).first()
    return None if row is None else memory_of(row)
