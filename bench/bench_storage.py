"""Accepts per second through the run store: message + run + `run.queued` + outbox request.

    .venv/bin/python bench/bench_storage.py --url URL --seconds 10 --concurrency N
    .venv/bin/python bench/bench_storage.py --backend postgres   # throwaway server
    .venv/bin/python bench/bench_storage.py --backend sqlite     # temp file

Each accept is exactly what `POST /v1/sessions/{id}/messages` writes (`accept_message`), over
one session per concurrent caller; concurrent accepts share transactions (group commit).
Prints numbers only, with this process's CPU per accept and the transactions it took.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soma.config import Settings
from soma.observability.metrics import Metrics
from soma.runs.commands import accept_message
from soma.runs.store import RunStore
from soma.storage import Database, DatabaseService, describe_url
from soma.storage.repositories import Agent, Session


async def _setup(db: Database, sessions: int) -> tuple[Agent, list[Session]]:
    async with db.transaction() as uow:
        tenant = await uow.tenants.create(f"bench-{time.time_ns()}")
        agent = await uow.agents.create(
            tenant.id, name="assistant", instructions="You help.", model="local"
        )
        made = [await uow.sessions.create(tenant.id, agent_id=agent.id) for _ in range(sessions)]
    return agent, made


async def _worker(
    store: RunStore, agent: Agent, session: Session, deadline: float, latencies: list[float]
) -> None:
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        await accept_message(store, session, agent, "hello, how are you today?")
        latencies.append(time.perf_counter() - started)


async def run(url: str, seconds: float, concurrency: int, pool_size: int) -> None:
    service = DatabaseService(Settings(database={"url": url, "pool_size": pool_size}), Metrics())
    await service.start()
    try:
        agent, sessions = await _setup(service.database, concurrency)
        # Warm the pool and statement caches so the timed part measures steady state.
        await _drive(service.run_store, agent, sessions, 1.0)
        before = service.run_store.counts
        transactions, cpu = before.transactions, time.process_time()
        latencies = await _drive(service.run_store, agent, sessions, seconds)
        cpu = time.process_time() - cpu
        transactions = service.run_store.counts.transactions - transactions
    finally:
        await service.stop()
    count = len(latencies)
    ordered = sorted(latencies)
    print(f"backend      {describe_url(url)}")
    print(f"concurrency  {concurrency} (pool {pool_size})")
    print(f"accepts      {count} in {seconds:g}s = {count / seconds:,.0f}/s")
    print(f"transactions {transactions} ({count / max(transactions, 1):.1f} accepts each)")
    print(f"cpu          {1000 * cpu / max(count, 1):.3f} ms per accept (this process)")
    if ordered:
        p99 = ordered[min(count - 1, int(count * 0.99))]
        print(
            f"latency ms   p50 {statistics.median(ordered) * 1e3:.2f}  "
            f"p99 {p99 * 1e3:.2f}  max {ordered[-1] * 1e3:.2f}"
        )


async def _drive(
    store: RunStore, agent: Agent, sessions: list[Session], seconds: float
) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(_worker(store, agent, s, deadline, latencies) for s in sessions))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL; default: a throwaway --backend")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pool-size", type=int, default=None, help="default: concurrency")
    args = parser.parse_args()
    pool_size = args.pool_size or args.concurrency
    stop: Callable[[], None] | None = None
    url = args.url
    if url is None and args.backend == "postgres":
        from tests.harness.postgres import create_database, start_postgres

        server, stop = start_postgres()
        url = create_database(server, with_vector=False)
    elif url is None:
        url = f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='soma-bench-')}/bench.db"
    try:
        asyncio.run(run(url, args.seconds, args.concurrency, pool_size))
    finally:
        if stop is not None:
            stop()


if __name__ == "__main__":
    main()
