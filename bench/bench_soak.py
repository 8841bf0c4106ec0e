"""Soak: the platform's memory under steady traffic, then idle (issue 10, finding 5).

    .venv/bin/python -m bench.bench_soak --stack embedded --rate 20 --messages 10000 --idle 60

Open loop at `--rate` turns/s against the real `python -m orchestrator.main` and an instant
scripted upstream; every turn is a POST `?stream=true`, so each run is also read over SSE.
Prints the platform process's RSS at start, every `--every` messages, once the last turn has
completed and after `--idle` seconds without traffic, beside the in-process streams' size
(`soma_cache_stream_bytes` in process; on Redis its used memory and stream keys) and the
runs completed so far.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
import uvloop
from redis.asyncio import Redis

from bench.bench_runs import QUIET, Tally, backends, guarded, make_sessions, platform, scrape
from bench.bench_runs import stream_turn as turn
from tests.e2e.platform import Platform
from tests.e2e.stacks import start_upstream

MB = 1024 * 1024
COMMAND = (".venv/bin/python", "-m", "bench.bench_soak")
REQUEST_TIMEOUT_S = 60.0


class Sampler:
    """One table row per sample: elapsed time, traffic so far, RSS, stream memory (in-process
    streams from `/metrics`; on Redis, the stream keys and the server's used memory)."""

    def __init__(
        self,
        process: psutil.Process,
        client: httpx.AsyncClient,
        began: float,
        redis: Redis | None,
    ) -> None:
        self._process = process
        self._client = client
        self._began = began
        self._redis = redis
        self.rows: list[str] = []
        self.rss: dict[str, float] = {}

    async def _streams(self, metrics: dict[str, float]) -> tuple[str, str]:
        if self._redis is not None:
            keys = [k async for k in self._redis.scan_iter(match="soma:st:*", count=1000)]
            count = sum(1 for k in keys if k.endswith(b"}"))
            used = int((await self._redis.info("memory"))["used_memory"])
            return f"redis {used / MB:.1f} MB", str(count)
        streams, size = metrics.get("soma_cache_streams"), metrics.get("soma_cache_stream_bytes")
        if streams is None or size is None:
            return "—", "—"
        return f"{size / MB:.2f} MB", f"{streams:.0f}"

    async def sample(self, label: str, sent: int) -> None:
        rss = self._process.memory_info().rss / MB
        metrics = await scrape(self._client)
        size, count = await self._streams(metrics)
        completed = metrics.get('soma_runs_total{outcome="completed"}', 0.0)
        row = (
            f"| {label:<22} | {time.perf_counter() - self._began:7.0f} s | {sent:6d} "
            f"| {completed:6.0f} | {rss:7.1f} MB | {size:>16} | {count:>7} |"
        )
        self.rows.append(row)
        self.rss[label] = rss
        print(row, flush=True)


async def soak(args: argparse.Namespace, running: Platform) -> str:
    key = (Path(running.env["SOMA_DATA_DIR"]) / "admin.key").read_text().strip()
    limits = httpx.Limits(max_connections=args.max_in_flight, keepalive_expiry=2)
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=running.base_url, timeout=REQUEST_TIMEOUT_S,
                                 headers=auth, limits=limits) as client:  # fmt: skip
        sessions = await make_sessions(client, args.sessions)
        cache_url = running.env.get("SOMA_CACHE__URL", "memory://")
        redis = Redis.from_url(cache_url) if cache_url.startswith("redis") else None
        process = psutil.Process(running.process.pid)
        sampler = Sampler(process, client, time.perf_counter(), redis)
        print("| point | elapsed | sent | completed | RSS | stream memory | streams |", flush=True)
        print("|---|---|---|---|---|---|---|", flush=True)
        await sampler.sample("start", 0)
        tally = Tally(first_send=time.perf_counter())
        tasks: set[asyncio.Task[None]] = set()
        sent = 0
        # Open loop: message i is due at t0 + i/rate whatever the answers do.
        while sent < args.messages:
            due = min(args.messages, int((time.perf_counter() - tally.first_send) * args.rate) + 1)
            for index in range(sent, due):
                if len(tasks) >= args.max_in_flight:
                    tally.outcomes["not sent (in-flight cap)"] += 1
                    continue
                scheduled = tally.first_send + index / args.rate
                session = sessions[index % len(sessions)]
                task = asyncio.create_task(guarded(turn, client, session, scheduled, tally))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if (index + 1) % args.every == 0 and index + 1 < args.messages:
                    await sampler.sample(f"after {index + 1} sent", index + 1)
            sent = due
            await asyncio.sleep(0.005)
        if tasks:
            await asyncio.wait(set(tasks), timeout=REQUEST_TIMEOUT_S)
        await sampler.sample(f"all {args.messages} done", sent)
        idle_began = time.perf_counter()
        while (left := args.idle - (time.perf_counter() - idle_began)) > 0:
            await asyncio.sleep(min(args.idle_every, left))
            idle = time.perf_counter() - idle_began
            await sampler.sample(f"idle {idle:.0f} s", sent)
        if redis is not None:
            await redis.aclose()
    start, end = sampler.rss["start"], list(sampler.rss.values())[-1]
    done = sampler.rss[f"all {args.messages} done"]
    per_message = (done - start) * MB / max(args.messages, 1) / 1024
    return "\n".join(
        [
            f"command : {shlex.join([*COMMAND, *sys.argv[1:]])}",
            f"outcomes: {dict(tally.outcomes)}",
            f"RSS     : start {start:.1f} MB, after {args.messages} messages {done:.1f} MB"
            f" ({per_message:+.2f} KB/message), after {args.idle:g} s idle {end:.1f} MB",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="RSS of the platform under steady traffic.")
    parser.add_argument("--stack", choices=("embedded", "distributed"), default="embedded")
    parser.add_argument("--rate", type=float, default=20.0, help="messages/s offered")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=1000, help="sample RSS every N messages")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle at the end")
    parser.add_argument("--idle-every", type=float, default=20.0)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--max-in-flight", type=int, default=200)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the platform")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    with ExitStack() as stop, backends(args.stack) as backend_env:
        workdir = Path(stop.enter_context(tempfile.TemporaryDirectory(prefix="soma-soak-")))
        runner = stop.enter_context(asyncio.Runner(loop_factory=uvloop.new_event_loop))
        upstream = start_upstream("--instant", "--reply", "ok")
        stop.callback(upstream.process.wait, 10)
        stop.callback(upstream.process.terminate)
        bench = "SOMA_LLM__MODELS__BENCH__"
        model = {"SOMA_LLM__DEFAULT_MODEL": "bench", f"{bench}PROVIDER": "openai",
                 f"{bench}BASE_URL": upstream.base_url, f"{bench}MODEL": "instant"}  # fmt: skip
        env = {**QUIET, **model, **backend_env(), **extra_env}
        with platform(workdir, env) as running:
            print(runner.run(soak(args, running)), flush=True)


if __name__ == "__main__":
    main()
