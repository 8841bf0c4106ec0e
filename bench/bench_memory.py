"""Long-term memory: recall latency at 10k and 100k memories per tenant, ingest rate, and
recall quality (hit@5), on SQLite (in-process index) and PostgreSQL (pgvector HNSW).

    .venv/bin/python -m bench.bench_memory                       # both backends
    .venv/bin/python -m bench.bench_memory --backend postgres --filler 200000

Per backend: a fresh database (SQLite temp file, or a throwaway PostgreSQL with pgvector from
tests/harness) gets four tenants, 10k and 100k memories in each of two layouts, and
`--filler` more in other tenants, bulk-written as rows with random unit vectors (only the
vector matters to search). Layout `users`: 99% of a tenant's memories belong to one of 100 end
users, 1% are the agent's shared ones; a user's recall sees about 2% of the tenant. Layout
`one scope`: every memory is shared, so recall searches all of them (the worst case). Then the
memory service starts (PostgreSQL: builds the HNSW index; SQLite: loads its index) and recall
is timed for user `u7`'s scope, k = 5, with the question's embedding included (real
questions, local MiniLM) and excluded (pre-embedded).
Ingest: memories/s through the service (embed, dedup, supersede, write), one at a time and
in runs of 20. Quality: tests/support/memory_quality.py (300 facts, a question each), hit@5.
Prints numbers only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert

from soma.config.settings import MemorySettings
from soma.core.clock import utcnow
from soma.core.ids import new_id
from soma.memory.embedder import LOCAL_DIM, LOCAL_MODEL
from soma.memory.model import NewMemory, Scope
from soma.memory.service import UnifiedMemoryService
from soma.observability.metrics import Metrics
from soma.storage import Database, StorageMetrics, create_engine, migrate
from soma.storage.tables import memories
from tests.harness.postgres import create_database, start_postgres
from tests.support.memory_quality import facts_and_questions

USERS = 100
BATCH = 2_000
QUESTIONS = ("What is my dog called?", "Where do I live now?", "Which food am I allergic to?",
             "When is my sister's birthday?", "What car do I drive?", "What is my job?",
             "Which instrument do I play?", "What colour do I like?")  # fmt: skip
WORDS = (
    "apple", "river", "engine", "violin", "garden", "rocket", "winter", "coffee", "castle",
    "python", "mountain", "letter", "silver", "ocean", "forest", "market", "bridge", "candle",
    "desert", "falcon", "harbor", "island", "jungle", "lantern", "meadow", "needle", "orchard",
    "pepper", "quartz", "saddle", "tunnel", "valley", "walnut", "yacht", "zebra",
)  # fmt: skip


async def _tenant(db: Database, name: str) -> Scope:
    async with db.transaction() as uow:
        tenant = await uow.tenants.create(name)
        agent = await uow.agents.create(tenant.id, name="assistant", instructions="", model="m")
    return Scope(tenant.id, agent.id)


async def _bulk(
    db: Database, scope: Scope, count: int, rng: np.random.Generator, users: bool
) -> float:
    """Rows with random unit vectors; returns rows/s."""
    started = time.perf_counter()
    postgres = db.engine.dialect.name == "postgresql"
    for offset in range(0, count, BATCH):
        n = min(BATCH, count - offset)
        vectors = rng.standard_normal((n, LOCAL_DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        now = utcnow()
        rows: list[dict[str, Any]] = [
            {"id": new_id(), "tenant_id": scope.tenant_id, "agent_id": scope.agent_id,
             "end_user": f"u{i % USERS}" if users and i % 100 else None, "kind": "fact",
             "content": f"memory {offset + i}", "tags": [], "source": "api", "source_id": None,
             "embedding": v if postgres else v.tobytes(), "embedding_model": LOCAL_MODEL,
             "embedding_dim": LOCAL_DIM, "created_at": now}
            for i, v in enumerate(vectors)
        ]  # fmt: skip
        async with db.transaction() as uow:
            await uow.connection.execute(insert(memories), rows)
    return count / (time.perf_counter() - started)


def _percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return f"p50 {q[49]:6.2f}  p95 {q[94]:6.2f}  p99 {q[98]:6.2f} ms  (n={len(ms)})"


async def _timed(calls: list[Callable[[], Awaitable[object]]]) -> list[float]:
    samples = []
    for call in calls:
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def _recall(memory: UnifiedMemoryService, scope: Scope, label: str, queries: int) -> None:
    user = Scope(scope.tenant_id, scope.agent_id, "u7")
    texts = [QUESTIONS[i % len(QUESTIONS)] for i in range(queries)]
    vectors = await memory.embed(list(QUESTIONS))
    warm = [lambda t=t: memory.recall(user, t, 5) for t in texts[:20]]
    await _timed(warm)
    excluded = await _timed(
        [
            lambda i=i: memory.recall_vector(user, vectors[i % len(QUESTIONS)], 5)
            for i in range(queries)
        ]
    )
    included = await _timed([lambda t=t: memory.recall(user, t, 5) for t in texts])
    print(f"  recall {label:>14}, embedding excluded: {_percentiles(excluded)}")
    print(f"  recall {label:>14}, embedding included: {_percentiles(included)}")


def _sentence(rng: np.random.Generator) -> str:
    words = rng.choice(WORDS, 6)
    return f"The user keeps a {words[0]} {words[1]} near the {words[2]} by the {words[3]}."


async def _ingest(db: Database, memory: UnifiedMemoryService, count: int) -> None:
    rng = np.random.default_rng(3)
    scope = await _tenant(db, f"ingest-{new_id()[-6:]}")
    started = time.perf_counter()
    for _ in range(count):
        await memory.remember(NewMemory(scope, _sentence(rng)))
    single = count / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(count // 20):
        items = [NewMemory(scope, _sentence(rng), source="run") for _ in range(20)]
        await memory.remember_run(scope.tenant_id, new_id(), items)
    batched = (count // 20 * 20) / (time.perf_counter() - started)
    print(f"  ingest through the service: {single:7.0f} memories/s one at a time, "
          f"{batched:7.0f}/s in runs of 20")  # fmt: skip


async def _quality(db: Database, memory: UnifiedMemoryService) -> None:
    facts, questions = facts_and_questions()
    scope = await _tenant(db, "quality")
    for fact in facts:
        await memory.remember(NewMemory(scope, fact))
    hits = 0
    for question in questions:
        found = await memory.recall(scope, question.text, 5)
        hits += question.answer in [r.memory.content for r in found]
    print(f"  quality: hit@5 {hits / len(questions):.3f} over {len(questions)} questions")


async def bench(url: str, args: argparse.Namespace) -> None:
    engine = create_engine(url, 5, False)
    await migrate(engine)
    db = Database(engine, StorageMetrics(Metrics()))
    rng = np.random.default_rng(1)
    layouts = {}
    rates = []
    for count in (args.small, args.big):
        for users in (True, False):
            scope = await _tenant(db, f"t{count}{users}")
            rates.append(await _bulk(db, scope, count, rng, users))
            layouts[f"{count // 1000}k {'users' if users else 'one scope'}"] = scope
    for i in range(0, args.filler, args.big):
        filler = await _tenant(db, f"filler{i}")
        rates.append(await _bulk(db, filler, min(args.big, args.filler - i), rng, True))
    total = 2 * (args.big + args.small) + args.filler
    print(f"  bulk rows: {total} ({statistics.mean(rates):.0f} rows/s, random unit vectors)")
    # The real write path for ingest: deduplication and supersession on.
    memory = UnifiedMemoryService(MemorySettings(), db, Metrics())
    started = time.perf_counter()
    await memory.start()
    print(f"  service start (index build or load over {total} rows): "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    try:
        for label, scope in layouts.items():
            await _recall(memory, scope, label, args.queries)
        await _ingest(db, memory, args.ingest)
        await _quality(db, memory)
    finally:
        await memory.stop()
        await engine.dispose()


async def _roomy_index_builds(url: str) -> None:
    """Give the HNSW build the memory pgvector asks for (the graph of 200k+ rows does not fit
    the default 64 MB, and a build that spills is many times slower) and a second core."""
    engine = create_engine(url, 1, False)
    name = engine.url.database
    async with engine.begin() as conn:
        for setting in ("maintenance_work_mem = '1GB'", "max_parallel_maintenance_workers = 1"):
            await conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET {setting}')
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--filler", type=int, default=0, help="memories in other tenants")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--ingest", type=int, default=1_000)
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cpus, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, load average {load}")  # fmt: skip
    for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
        print(f"{backend}:")
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                asyncio.run(bench(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}", args))
        else:
            server, stop = start_postgres()
            try:
                url = create_database(server, with_vector=False)
                asyncio.run(_roomy_index_builds(url))
                asyncio.run(bench(url, args))
            finally:
                stop()


if __name__ == "__main__":
    main()
