"""Embedded policy decisions per second: one coroutine, many coroutines, thread hop, threads.

Usage: .venv/bin/python bench/bench_policy.py [--seconds 2] [--concurrency 64] [--threads 2]
"Inline" is what `PolicyService.decide` does (evaluate on the event loop with that thread's
engine); "to_thread" is the alternative of hopping to a worker thread per decision.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soma.config.settings import Settings
from soma.observability.metrics import Metrics
from soma.policy import PolicyInput, PolicyService, Subject, create_policy
from soma.policy.embedded import EmbeddedPolicy

INPUTS = [
    PolicyInput("conversation.send", "t1", Subject("k", ("chat",)), {"tenant_id": "t1"}),
    PolicyInput("tool.execute", "t1", Subject("k", ("chat",)), {"requires_approval": True}),
    PolicyInput("admin.keys.create", "t1", Subject("k", ("chat",))),
    PolicyInput("memory.read", "t1", Subject("k", ("chat",)), {"tenant_id": "t2"}),
]


def report(label: str, count: int, elapsed: float) -> None:
    print(f"{label:<44} {count / elapsed:>10,.0f} decisions/s  ({count} in {elapsed:.2f} s)")


async def single(service: PolicyService, seconds: float) -> None:
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for item in INPUTS:
            await service.decide(item)
        count += len(INPUTS)
    report("service.decide, 1 coroutine (inline)", count, time.perf_counter() - began)


async def many(service: PolicyService, seconds: float, concurrency: int) -> None:
    count, deadline = 0, time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            for item in INPUTS:
                await service.decide(item)
            count += len(INPUTS)
            await asyncio.sleep(0)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    report(f"service.decide, {concurrency} coroutines (inline)", count, time.perf_counter() - began)


async def hop(engine: EmbeddedPolicy, seconds: float, concurrency: int) -> None:
    count, deadline = 0, time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await asyncio.to_thread(engine.evaluate_sync, INPUTS[count % len(INPUTS)])
            count += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    report(f"asyncio.to_thread, {concurrency} coroutines", count, time.perf_counter() - began)


def threads(engine: EmbeddedPolicy, seconds: float, count_threads: int) -> None:
    counts = [0] * count_threads
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        while time.perf_counter() < deadline:
            for item in INPUTS:
                engine.evaluate_sync(item)
            counts[index] += len(INPUTS)

    began = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(count_threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    report(f"evaluate_sync, {count_threads} threads", sum(counts), time.perf_counter() - began)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    service = create_policy(Settings(), Metrics())
    await service.start()
    engine = EmbeddedPolicy()
    await engine.start()
    began = time.perf_counter()
    engine.load()
    load_ms = (time.perf_counter() - began) * 1e3
    print(f"load + compile + probe of the packaged policies: {load_ms:.2f} ms")
    await single(service, args.seconds)
    await many(service, args.seconds, args.concurrency)
    await hop(engine, args.seconds, args.concurrency)
    threads(engine, args.seconds, args.threads)
    await service.stop()


if __name__ == "__main__":
    asyncio.run(main())
