"""Vector search over one scope's live memories: the port and the PostgreSQL adapter
(pgvector HNSW); `SqliteIndex` keeps `FlatIndex` in step with the SQLite table."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pgvector.sqlalchemy import VECTOR
from sqlalchemy import cast, func, select, text, true
from sqlalchemy.ext.asyncio import AsyncConnection

from soma.memory import records
from soma.memory.embedder import Vectors
from soma.memory.flat_index import FlatIndex
from soma.memory.model import Memory, Recalled, Scope
from soma.storage.database import Database
from soma.storage.tables import memories


class VectorIndex(Protocol):
    async def load(self) -> None:
        """Ready the index for the embedder's model (build it, or check the database's)."""
        ...

    async def recall(self, scope: Scope, vector: Vectors, k: int) -> list[Recalled]:
        """Top `k` live memories of the scope and the agent's shared ones, best first."""
        ...

    async def nearest(
        self, conn: AsyncConnection, scope: Scope, vector: Vectors, k: int
    ) -> list[Recalled]:
        """Top `k` live memories of exactly this scope, seen from a write transaction."""
        ...

    def added(self, memory: Memory, vector: Vectors, supersedes: Sequence[str]) -> None:
        """A write committed: the new memory is live, those it superseded are not."""
        ...

    def removed(self, ids: Sequence[str]) -> None: ...


EXACT_UP_TO = 3_000
"""A scope with at most this many live memories is searched exactly, read through the btree
of its scope: HNSW with so selective a filter walks far through the graph for a few matches."""
LARGE_FOR_S = 60.0
"""A scope found larger than `EXACT_UP_TO` goes straight to HNSW for this long."""
LARGE_SCOPES = 10_000
"""Large scopes remembered (the oldest are forgotten first)."""


class PostgresIndex:
    """pgvector: an HNSW index per dimension (cosine), filtered by tenant, agent and user.

    Small scopes (a user's memories among a tenant's) are searched exactly in the same
    statement; large ones through the index. Iterative index scans (pgvector >= 0.8) keep
    filling the top k when the filters drop most of the nearest rows, instead of returning
    fewer than k.
    """

    def __init__(
        self,
        database: Database,
        model: str,
        dim: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._model = model
        self._dim = dim
        self._clock = clock
        self._large: dict[tuple[Scope, bool], float] = {}

    async def load(self) -> None:
        dim = int(self._dim)
        async with self._database.transaction() as uow:
            # Replicas starting together would race on the index's name: one at a time.
            await uow.connection.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(hashtext('soma.memory.hnsw'))"
            )
            await uow.connection.exec_driver_sql(
                f"CREATE INDEX IF NOT EXISTS ix_memories_hnsw_{dim} ON memories USING hnsw "
                f"((embedding::vector({dim})) vector_cosine_ops) "
                f"WHERE embedding_dim = {dim} AND superseded_by IS NULL"
            )

    async def recall(self, scope: Scope, vector: Vectors, k: int) -> list[Recalled]:
        async with self._database.read() as uow:
            return await self._search(uow.connection, scope, vector, k, shared=True)

    async def nearest(
        self, conn: AsyncConnection, scope: Scope, vector: Vectors, k: int
    ) -> list[Recalled]:
        return await self._search(conn, scope, vector, k, shared=False)

    async def _search(
        self, conn: AsyncConnection, scope: Scope, vector: Vectors, k: int, *, shared: bool
    ) -> list[Recalled]:
        dim = int(self._dim)
        distance = cast(memories.c.embedding, VECTOR(dim)).cosine_distance(vector)
        live = (
            *records.in_scope(scope, shared=shared),
            memories.c.embedding_model == self._model,
            # Literals, so the planner matches the partial HNSW index of this dimension.
            text(f"memories.embedding_dim = {dim}"),
            memories.c.superseded_by.is_(None),
        )
        nearest = select(*records.COLUMNS, distance.label("distance")).order_by(distance).limit(k)
        key = (scope, shared)
        rows: Sequence[Any] = []
        if self._large.get(key, 0.0) < self._clock():
            # One statement: how many the scope holds (up to the bound), and if within it, the
            # exact top k of them; a row of NULLs stands for "none" or "too many".
            ids = select(memories.c.id).where(*live).limit(EXACT_UP_TO + 1).cte("scope_ids")
            held = select(func.count().label("held")).select_from(ids).subquery("held")
            exact = nearest.where(
                memories.c.id.in_(select(ids.c.id)), held.c.held <= EXACT_UP_TO
            ).lateral("exact")
            rows = (await conn.execute(select(held.c.held, exact).outerjoin(exact, true()))).all()
            if rows[0].held <= EXACT_UP_TO:
                self._large.pop(key, None)
            else:
                self._remember_large(key)
                rows = []
        if not rows:
            await conn.exec_driver_sql("SET LOCAL hnsw.iterative_scan = relaxed_order")
            rows = (await conn.execute(nearest.where(*live))).all()
        found = [
            Recalled(records.memory_of(row), 1.0 - float(row.distance))
            for row in rows
            if row.id is not None
        ]
        # relaxed_order may return a near neighbour slightly out of place.
        return sorted(found, key=lambda r: -r.score)

    def _remember_large(self, key: tuple[Scope, bool]) -> None:
        self._large.pop(key, None)
        self._large[key] = self._clock() + LARGE_FOR_S
        while len(self._large) > LARGE_SCOPES:
            del self._large[next(iter(self._large))]

    def added(self, memory: Memory, vector: Vectors, supersedes: Sequence[str]) -> None:
        """The HNSW index was updated by the same transaction."""

    def removed(self, ids: Sequence[str]) -> None:
        """The HNSW index was updated by the same transaction."""


class SqliteIndex:
    """`FlatIndex` loaded from the table at start and told of every committed write."""

    def __init__(self, database: Database, model: str, dim: int) -> None:
        self._database = database
        self._model = model
        self.flat = FlatIndex(dim)

    async def load(self) -> None:
        async with self._database.read() as uow:
            async for memory, vector in records.live_with_vectors(uow.connection, self._model):
                self.flat.add(memory, vector)

    async def recall(self, scope: Scope, vector: Vectors, k: int) -> list[Recalled]:
        return self.flat.search(scope, vector, k, shared=True)

    async def nearest(
        self, conn: AsyncConnection, scope: Scope, vector: Vectors, k: int
    ) -> list[Recalled]:
        # The transaction holds SQLite's one write lock and the index is updated right after
        # each commit, before the lock can pass on: what it holds is what is committed.
        return self.flat.search(scope, vector, k, shared=False)

    def added(self, memory: Memory, vector: Vectors, supersedes: Sequence[str]) -> None:
        for memory_id in supersedes:
            self.flat.remove(memory_id)
        self.flat.add(memory, vector)

    def removed(self, ids: Sequence[str]) -> None:
        for memory_id in ids:
            self.flat.remove(memory_id)
