"""`UnifiedMemoryService` (service `memory`): the only code that touches memories."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncConnection
from threadpoolctl import threadpool_limits

from soma.config.memory import MemorySettings
from soma.core.clock import utcnow
from soma.core.ids import new_id
from soma.core.service import Health
from soma.memory import records
from soma.memory.embedder import Embedder, LocalEmbedder, Vectors
from soma.memory.embedder_openai import OpenAIEmbedder
from soma.memory.index import PostgresIndex, SqliteIndex, VectorIndex
from soma.memory.model import Memory, MemoryUnavailableError, NewMemory, Recalled, Scope
from soma.observability.metrics import Metrics
from soma.storage.audit_chain import SYSTEM_ACTOR, AuditRecord
from soma.storage.database import Database
from soma.storage.repositories.base import Page

_log = logging.getLogger("soma.memory")
NEIGHBOURS = 8
"""Live memories of the scope compared with a new one (dedup and supersession)."""
REEMBED_BATCH = 256

Outcome = Literal["stored", "duplicate"]


@dataclass(frozen=True, slots=True)
class Remembered:
    memory: Memory
    outcome: Outcome
    """`duplicate`: an equal live memory exists and is returned; nothing was written."""
    superseded: tuple[str, ...] = ()


class MemoryMetrics:
    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.recall_seconds = Histogram(
            "soma_memory_recall_seconds",
            "Memory recall latency (query embedding included)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self.writes = Counter(
            "soma_memory_writes_total", "Memories offered to the store", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.superseded = Counter(
            "soma_memory_superseded_total", "Memories replaced by a newer one", registry=registry
        )
        self.reembedded = Counter(
            "soma_memory_reembedded_total", "Memories re-embedded by a new model", registry=registry
        )


def create_embedder(settings: MemorySettings) -> Embedder:
    config = settings.embedder
    if config.provider == "openai":
        assert config.base_url and config.model  # the settings validate it
        key = config.api_key.get_secret_value() if config.api_key else None
        return OpenAIEmbedder(
            config.base_url, config.model, key, config.timeout_s, config.batch_size
        )
    return LocalEmbedder(config.batch_size, config.threads)


def describe(settings: MemorySettings) -> str:
    config = settings.embedder
    embedder = f"openai {config.model}" if config.provider == "openai" else "local MiniLM (ONNX)"
    return f"{embedder}, extraction {settings.extraction}"


class UnifiedMemoryService:
    """Schema, embedder and index of long-term memory; everything else calls this."""

    def __init__(
        self,
        settings: MemorySettings,
        database: Database,
        metrics: Metrics,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings
        self._database = database
        self._embedder = embedder or create_embedder(settings)
        self._metrics = MemoryMetrics(metrics)
        self._index: VectorIndex | None = None
        self._reembed: asyncio.Task[int] | None = None

    @property
    def name(self) -> str:
        return "memory"

    @property
    def model(self) -> str:
        return self._embedder.model

    async def start(self) -> None:
        # One BLAS thread for the process: a recall's matrix-vector product gains nothing from
        # more, and OpenBLAS threads spinning for a core on a busy machine made a 5k-memory
        # search 20 ms instead of 0.2 ms (bench_memory, load average 10 on 2 cores).
        threadpool_limits(limits=1, user_api="blas")
        await self._embedder.start()
        model, dim = self._embedder.model, self._embedder.dim
        postgres = self._database.engine.dialect.name == "postgresql"
        index: VectorIndex = (
            PostgresIndex(self._database, model, dim)
            if postgres
            else SqliteIndex(self._database, model, dim)
        )
        await index.load()
        self._index = index
        async with self._database.read() as uow:
            stale = await records.stale(uow.connection, model, 1)
        if stale:
            # The embedder changed: migrate in the background; until then recall misses them.
            self._reembed = asyncio.create_task(self.reembed(), name="memory-reembed")

    async def stop(self) -> None:
        index, self._index = self._index, None
        if self._reembed is not None:
            self._reembed.cancel()
            await asyncio.gather(self._reembed, return_exceptions=True)
        if index is not None:
            await self._embedder.stop()

    async def health(self) -> Health:
        if self._index is None:
            return Health.unhealthy("not started")
        return Health.healthy(f"{self._embedder.model} ({self._embedder.dim}d)")

    def _ready(self) -> VectorIndex:
        if self._index is None:
            raise MemoryUnavailableError("the memory service is not running")
        return self._index

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self._ready()
        return await self._embedder.embed(texts)

    async def recall(self, scope: Scope, query: str, k: int) -> list[Recalled]:
        """The scope's (and its agent's shared) live memories most similar to `query`."""
        started = time.perf_counter()
        self._ready()
        vector = (await self._embedder.embed([query]))[0]
        found = await self.recall_vector(scope, vector, k)
        self._metrics.recall_seconds.observe(time.perf_counter() - started)
        return found

    async def recall_vector(self, scope: Scope, vector: Vectors, k: int) -> list[Recalled]:
        """`recall` for a query embedded already (by this service's embedder)."""
        return await self._ready().recall(scope, vector, k)

    async def remember(self, new: NewMemory, actor: str = SYSTEM_ACTOR) -> Remembered:
        """Keep one memory: nothing when an equal one is live, replacing those it restates
        (audited as `memory.write` with the write)."""
        vector = (await self.embed([new.content]))[0]
        async with self._database.transaction() as uow:
            result = await self._write(uow.connection, new, vector, [])
            if result.outcome == "stored":
                await uow.audit.record(
                    AuditRecord(
                        new.scope.tenant_id, actor, "memory.write",
                        f"memory:{result.memory.id}",
                        {"source": new.source, "superseded": list(result.superseded)},
                    )
                )  # fmt: skip
        self._committed([(result, vector)])
        return result

    async def ingested(self, run_id: str) -> bool:
        """Whether the pipeline already handled this run."""
        async with self._database.read() as uow:
            return await records.ingested(uow.connection, run_id)

    async def remember_run(
        self, tenant_id: str, run_id: str, items: Sequence[NewMemory]
    ) -> int | None:
        """Keep what a completed run left; None when an earlier delivery already did."""
        vectors = await self.embed([item.content for item in items]) if items else None
        written: list[tuple[Remembered, Vectors]] = []
        async with self._database.transaction() as uow:
            conn = uow.connection
            if not await records.mark_ingested(conn, tenant_id, run_id, utcnow()):
                return None
            for i, item in enumerate(items):
                assert vectors is not None
                # Earlier items of this run are not in the (SQLite) index yet: compare here.
                batch = [(r, v) for r, v in written if r.memory.scope == item.scope]
                result = await self._write(conn, item, vectors[i], batch)
                written.append((result, vectors[i]))
            kept = [r.memory.id for r, _ in written if r.outcome == "stored"]
            stored = len(kept)
            await records.count_ingested(conn, run_id, stored)
            if kept:
                await uow.audit.record(
                    AuditRecord(tenant_id, SYSTEM_ACTOR, "memory.write", f"run:{run_id}",
                                {"memories": kept})
                )  # fmt: skip
        self._committed(written)
        return stored

    async def _write(
        self,
        conn: AsyncConnection,
        new: NewMemory,
        vector: Vectors,
        batch: Sequence[tuple[Remembered, Vectors]],
    ) -> Remembered:
        near = await self._ready().nearest(conn, new.scope, vector, NEIGHBOURS)
        near += [Recalled(r.memory, float(v @ vector)) for r, v in batch if r.outcome == "stored"]
        live = [r for r in near if r.memory.id not in {s for b, _ in batch for s in b.superseded}]
        best = max(live, key=lambda r: r.score, default=None)
        if best is not None and best.score >= self.settings.duplicate_similarity:
            self._metrics.writes.labels("duplicate").inc()
            return Remembered(best.memory, "duplicate")
        similar = [
            r.memory.id
            for r in live
            if r.score >= self.settings.supersede_similarity and r.memory.kind == new.kind
        ]
        supersedes = tuple(dict.fromkeys([*similar, *new.replaces]))
        memory = Memory(
            id=new_id(),
            tenant_id=new.scope.tenant_id,
            agent_id=new.scope.agent_id,
            user=new.scope.user,
            kind=new.kind,
            content=new.content,
            tags=tuple(new.tags),
            source=new.source,
            source_id=new.source_id,
            embedding_model=self._embedder.model,
            created_at=utcnow(),
        )
        await records.insert(conn, memory, vector, supersedes)
        self._metrics.writes.labels("stored").inc()
        self._metrics.superseded.inc(len(supersedes))
        return Remembered(memory, "stored", supersedes)

    def _committed(self, written: Sequence[tuple[Remembered, Vectors]]) -> None:
        index = self._ready()
        for result, vector in written:
            if result.outcome == "stored":
                index.added(result.memory, vector, result.superseded)

    async def get(self, tenant_id: str, memory_id: str) -> Memory | None:
        async with self._database.read() as uow:
            return await records.get(uow.connection, tenant_id, memory_id)

    async def newest(
        self,
        tenant_id: str,
        limit: int,
        cursor: str | None = None,
        *,
        agent_id: str | None = None,
        user: str | None = None,
    ) -> Page[Memory]:
        async with self._database.read() as uow:
            return await records.newest(
                uow.connection, tenant_id, limit, cursor, agent_id=agent_id, user=user
            )

    async def delete(self, tenant_id: str, memory_id: str, actor: str = SYSTEM_ACTOR) -> bool:
        async with self._database.transaction() as uow:
            deleted = await records.delete_one(uow.connection, tenant_id, memory_id)
            if deleted:
                await uow.audit.record(
                    AuditRecord(tenant_id, actor, "memory.delete", f"memory:{memory_id}")
                )
        if deleted:
            self._ready().removed([memory_id])
        return deleted

    async def forget_user(
        self, tenant_id: str, user: str, agent_id: str | None = None, actor: str = SYSTEM_ACTOR
    ) -> int:
        """Right to be forgotten: every memory of one end user (of one agent, if named)."""
        async with self._database.transaction() as uow:
            ids = await records.delete_user(uow.connection, tenant_id, user, agent_id)
            if ids:
                await uow.audit.record(
                    AuditRecord(tenant_id, actor, "memory.delete", f"user:{user}",
                                {"agent_id": agent_id, "memories": ids})
                )  # fmt: skip
        self._ready().removed(ids)
        return len(ids)

    async def export(
        self, tenant_id: str, *, agent_id: str | None = None, user: str | None = None
    ) -> AsyncIterator[Memory]:
        async with self._database.read() as uow:
            async for memory in records.export(
                uow.connection, tenant_id, agent_id=agent_id, user=user
            ):
                yield memory

    async def reembed(self) -> int:
        """Move memories embedded by another model to this one (after an embedder change)."""
        model, done = self._embedder.model, 0
        while True:
            async with self._database.read() as uow:
                stale = await records.stale(uow.connection, model, REEMBED_BATCH)
            if not stale:
                break
            vectors = await self._embedder.embed([content for _, content in stale])
            updated: list[tuple[Memory, Vectors]] = []
            async with self._database.transaction() as uow:
                for (memory_id, _), vector in zip(stale, vectors, strict=True):
                    memory = await records.set_embedding(uow.connection, memory_id, vector, model)
                    if memory is not None and memory.superseded_by is None:
                        updated.append((memory, vector))
            for memory, vector in updated:
                self._ready().added(memory, vector, ())
            done += len(stale)
            self._metrics.reembedded.inc(len(stale))
        if done:
            _log.info("re-embedded %d memories with %s", done, model)
        return done
