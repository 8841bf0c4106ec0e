"""Rate-limit checks per second with `Quotas.take` on Redis (one Lua script per check, checks
of concurrent callers pipelined), N concurrent callers.

Usage: .venv/bin/python bench/bench_ratelimit.py [--url redis://127.0.0.1:6379/0]
       [--concurrency 64] [--seconds 3] [--keys 1000] [--buckets 2] [--memory]
Without --url a throwaway redis-server is started on a free loopback port (test harness).
--buckets 2 (default) takes from a key's and its tenant's bucket together, as every request
does; 1 is the failed-auth guard's one bucket per address. --memory also measures the
in-process quotas for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soma.cache.memory_quotas import MemoryQuotas
from soma.cache.redis import RedisCache
from soma.limits.port import Bucket, Quotas
from tests.harness.redis import start_redis


def buckets(n: int, args: argparse.Namespace) -> list[Bucket]:
    key = Bucket(f"bench:{{t{n % 10}}}:key:{n % args.keys}", rate_per_s=100, burst=50)
    tenant = Bucket(f"bench:{{t{n % 10}}}", rate_per_s=100_000, burst=50_000)
    return [key, tenant][: args.buckets]


async def run(label: str, quotas: Quotas, args: argparse.Namespace) -> None:
    done = allowed = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + args.seconds

    async def caller(index: int) -> None:
        nonlocal done, allowed
        n = index
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            taken = await quotas.take(buckets(n, args))
            latencies.append(time.perf_counter() - began)
            done += 1
            allowed += taken.allowed
            n += args.concurrency

    began = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(args.concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1e3
    p99 = latencies[int(len(latencies) * 0.99)] * 1e3
    print(
        f"{label:<28} concurrency {args.concurrency:>4}: {done / elapsed:>9,.0f} checks/s"
        f"  p50 {p50:.2f} ms  p99 {p99:.2f} ms  ({allowed} of {done} allowed)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="redis:// URL; default: start a throwaway redis-server")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--buckets", type=int, choices=(1, 2), default=2)
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()
    stop = None
    url = args.url
    if url is None:
        url, stop = start_redis()
        print(f"started redis-server at {url}")
    try:
        cache = RedisCache(
            url, max_connections=args.concurrency, stream_maxlen=10_000, stream_ttl_s=3600
        )
        try:
            await cache.ping()
            await run(f"redis ({args.buckets} bucket(s))", cache.quotas, args)
        finally:
            await cache.aclose()
        if args.memory:
            await run(f"in-process ({args.buckets} bucket(s))", MemoryQuotas(), args)
    finally:
        if stop is not None:
            stop()


if __name__ == "__main__":
    asyncio.run(main())
