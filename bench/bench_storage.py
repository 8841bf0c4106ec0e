"""Write throughput of the storage layer: transactions of message + run + outbox row per second.

    .venv/bin/python bench/bench_storage.py --url URL --seconds 10 --concurrency N
    .venv/bin/python bench/bench_storage.py --backend postgres   # throwaway server
    .venv/bin/python bench/bench_storage.py --backend sqlite     # temp file

Each transaction appends a user message to one of the workers' sessions, creates a queued run
for it and adds an outbox row, exactly as the gateway's POST message does. Prints numbers only.
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

from soma.observability.metrics import Metrics
from soma.storage import Database, StorageMetrics, create_engine, describe_url, migrate


async def _setup(db: Database, sessions: int) -> tuple[str, str, list[str]]:
    async with db.transaction() as uow:
        tenant = await uow.tenants.create(f"bench-{time.time_ns()}")
        agent = await uow.agents.create(
            tenant.id, name="assistant", instructions="You help.", model="local"
        )
        ids = [
            (await uow.sessions.create(tenant.id, agent_id=agent.id)).id for _ in range(sessions)
        ]
    return tenant.id, agent.id, ids


async def _worker(
    db: Database,
    tenant_id: str,
    agent_id: str,
    session_id: str,
    deadline: float,
    latencies: list[float],
) -> None:
    payload = b'{"type":"conversation.inbound","payload":{"content":"hello"}}'
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        async with db.transaction() as uow:
            message, _ = await uow.messages.create(
                tenant_id, session_id, role="user", content="hello, how are you today?"
            )
            await uow.runs.create(
                tenant_id, session_id=session_id, agent_id=agent_id, message_id=message.id
            )
            await uow.outbox.add(
                "soma.conversation.inbound", session_id, payload, {"traceparent": "00-x"}
            )
        latencies.append(time.perf_counter() - started)


async def run(url: str, seconds: float, concurrency: int, pool_size: int) -> None:
    engine = create_engine(url, pool_size, False)
    try:
        await migrate(engine)
        db = Database(engine, StorageMetrics(Metrics()))
        tenant_id, agent_id, sessions = await _setup(db, concurrency)
        # Warm the pool and statement caches so the timed part measures steady state.
        await _drive(db, tenant_id, agent_id, sessions, 1.0)
        latencies = await _drive(db, tenant_id, agent_id, sessions, seconds)
    finally:
        await engine.dispose()
    count = len(latencies)
    ordered = sorted(latencies)
    print(f"backend      {describe_url(url)}")
    print(f"concurrency  {concurrency} (pool {pool_size})")
    print(f"transactions {count} in {seconds:g}s = {count / seconds:,.0f} tx/s")
    if ordered:
        p99 = ordered[min(count - 1, int(count * 0.99))]
        print(
            f"latency ms   p50 {statistics.median(ordered) * 1e3:.2f}  "
            f"p99 {p99 * 1e3:.2f}  max {ordered[-1] * 1e3:.2f}"
        )


async def _drive(
    db: Database, tenant_id: str, agent_id: str, sessions: list[str], seconds: float
) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    await asyncio.gather(
        *(_worker(db, tenant_id, agent_id, s, deadline, latencies) for s in sessions)
    )
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
