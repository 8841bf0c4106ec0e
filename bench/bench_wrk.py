"""Accepted messages/s and full turns/s through the real platform, driven by `wrk`.

    .venv/bin/python -m bench.bench_wrk --stack embedded --measure accept --measure turns
    .venv/bin/python -m bench.bench_wrk --stack distributed --shape split --measure turns

`wrk` (compiled, a few % of a core) sends the POSTs, round-robin over `--sessions` sessions:
`accept` POSTs and counts 202s, `turns` POSTs with `?wait=true` (200 once the run completed).
`--tool files` makes every turn a tool turn: an agent with that tool, and an upstream in
`--tools` mode that calls it once (`--tool-args`) before it answers. Beside every rate: the
CPU of each process over the window (platform processes, upstream, wrk, database/broker/cache
servers) and the platform's CPU per operation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psutil

from bench.bench_runs import (
    QUIET,
    backends,
    make_sessions,
    profile_summary,
    scrape,
    start_profile,
)
from bench.openloop import run_open_loop
from tests.e2e.platform import Platform, free_port, launch
from tests.e2e.stacks import start_upstream

SHAPES = ("one", "split")
"""`one`: every service in one process. `split`: `--apis` API processes (gateway and outbox
relay) sharing the port, and a worker process (conversation, recovery), on the same servers;
distributed stack only."""

LUA = """
local sessions = {%(sessions)s}
local i = 0
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
request = function()
  i = i + 1
  return wrk.format(nil, "/v1/sessions/" .. sessions[(i %% #sessions) + 1] .. "/messages%(query)s")
end
local codes = {}
response = function(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end
done = function(summary, latency, requests)
  for _, p in pairs({50, 90, 99, 99.9}) do
    io.write(string.format("PCT %%g %%d\\n", p, latency:percentile(p)))
  end
  io.write(string.format("MAX %%d\\n", latency.max))
end
"""


class CpuWindow:
    """CPU seconds of named process groups between enter and exit."""

    def __init__(self, groups: dict[str, list[psutil.Process]]) -> None:
        self._groups = groups

    @staticmethod
    def _cpu(processes: list[psutil.Process]) -> float:
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
            except psutil.NoSuchProcess:
                continue
        return total

    def __enter__(self) -> CpuWindow:
        self._wall = time.perf_counter()
        self._start = {name: self._cpu(procs) for name, procs in self._groups.items()}
        self._machine = psutil.cpu_times()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.seconds = {
            name: self._cpu(procs) - self._start[name] for name, procs in self._groups.items()
        }
        now = psutil.cpu_times()
        busy = (sum(now) - now.idle - now.iowait) - (
            sum(self._machine) - self._machine.idle - self._machine.iowait
        )
        self.machine_pct = 100 * busy / self.wall


def server_processes() -> list[psutil.Process]:
    """Database, broker and cache servers started by the harness (by process name)."""
    names = ("postgres", "redis-server", "tansu")
    return [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "") in names]


def run_wrk(
    lua: Path, url: str, connections: int, duration: float
) -> tuple[str, subprocess.Popen[str]]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "30s",
               "-s", str(lua), url]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    return " ".join(command), process


def parse_wrk(output: str) -> tuple[float, int, dict[str, float], str]:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    pct = {m.group(1): int(m.group(2)) / 1000 for m in re.finditer(r"PCT ([\d.]+) (\d+)", output)}
    errors = re.search(r"Socket errors:.*|Non-2xx.*", output)
    return rate, total, pct, errors.group(0) if errors else ""


@contextmanager
def platforms(
    workdir: Path, env: dict[str, str], shape: str, apis: int
) -> Iterator[list[Platform]]:
    """`one`: one process. `split`: `apis` API processes on one port, then one worker."""
    started: list[Platform] = []
    try:
        if shape == "one":
            started.append(launch(Path(tempfile.mkdtemp(dir=workdir)), env))
        else:
            port = str(free_port())
            api_env = {**env, "SOMA_SERVICES": "gateway", "SOMA_HTTP__PORT": port,
                       "SOMA_HTTP__REUSE_PORT": "true"}  # fmt: skip
            for _ in range(apis):
                api = launch(Path(tempfile.mkdtemp(dir=workdir)), api_env)
                api.base_url = f"http://127.0.0.1:{port}"
                started.append(api)
                api.wait_healthy(timeout=90)
            worker_env = {**env, "SOMA_SERVICES": "conversation,recovery"}
            started.append(launch(Path(tempfile.mkdtemp(dir=workdir)), worker_env))
        for running in started:
            running.wait_healthy(timeout=90)
        yield started
    finally:
        for running in started:
            running.process.kill()
            running.process.wait()


async def prepare(
    running: Platform, key: str, count: int, tool: str | None
) -> tuple[list[str], dict[str, float]]:
    """Sessions of the default agent, or with `tool` of an agent that may call it."""
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=running.base_url, timeout=60, limits=limits,
                                 headers={"Authorization": f"Bearer {key}"}) as client:  # fmt: skip
        if tool is None:
            sessions = await make_sessions(client, count)
        else:
            agent = {"name": "bench-tools", "tools": [tool]}
            (await client.post("/v1/agents", json=agent)).raise_for_status()
            body = {"agent": "bench-tools"}
            answers = await asyncio.gather(
                *(client.post("/v1/sessions", json=body) for _ in range(count))
            )
            sessions = [str(a.raise_for_status().json()["id"]) for a in answers]
        return sessions, await scrape(client)


def message_body(args: argparse.Namespace) -> bytes:
    if args.tool is None:
        return b'{"content":"hi"}'
    content = "call " + json.dumps([[args.tool, json.loads(args.tool_args)]])
    return json.dumps({"content": content}).encode()


async def metrics_of(running: Platform) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=running.base_url, timeout=60) as client:
        return await scrape(client)


def measure_open(args: argparse.Namespace, group: list[Platform], upstream_pid: int) -> str:
    """`--rate` turns/s offered (open loop), each observed with `?wait=true`."""
    api = group[0]
    key = (Path(api.env["SOMA_DATA_DIR"]) / "admin.key").read_text().strip()
    sessions, _ = asyncio.run(prepare(api, key, args.sessions, args.tool))
    processes = {f"platform[{i}]": [psutil.Process(p.process.pid)] for i, p in enumerate(group)}
    processes["upstream"] = [psutil.Process(upstream_pid)]
    processes["servers"] = server_processes()
    body = message_body(args)
    load = run_open_loop(api.base_url, key, sessions, args.rate, 2, args.connections, body)
    asyncio.run(load)  # warm up
    with CpuWindow(processes) as cpu:
        result = asyncio.run(
            run_open_loop(
                api.base_url, key, sessions, args.rate, args.duration, args.connections, body
            )
        )
    done = len(result.latencies)
    platform_cpu = sum(v for k, v in cpu.seconds.items() if k.startswith("platform"))
    quantiles = "  ".join(
        f"p{int(q * 100)} {1000 * result.percentile(q):.1f} ms" for q in (0.5, 0.9, 0.95, 0.99)
    )
    return "\n".join(
        [
            f"== open · {args.stack} · shape {args.shape} ({len(group)} processes) · "
            f"{args.rate:g} turns/s offered, {len(sessions)} sessions, ?wait=true",
            f"command : {reproduce()}",
            f"outcomes: {dict(result.outcomes)}; sends late by > 10 ms: {result.late_sends}",
            f"rate    : {done} turns completed in {result.wall_s:.1f} s "
            f"= {done / result.wall_s:,.0f}/s",
            f"latency : from each turn's scheduled instant: {quantiles}",
            "cpu     : "
            + ", ".join(f"{k} {100 * v / cpu.wall:.0f}%" for k, v in cpu.seconds.items())
            + f", client {100 * result.client_cpu_s / result.wall_s:.0f}%"
            + f"; machine busy {cpu.machine_pct:.0f}% of {100 * (psutil.cpu_count() or 1)}%",
            f"platform: {1000 * platform_cpu / max(done, 1):.3f} ms CPU per full turn",
        ]
    )


def reproduce() -> str:
    return shlex.join([".venv/bin/python", "-m", "bench.bench_wrk", *sys.argv[1:]])


def measure(name: str, args: argparse.Namespace, group: list[Platform], workdir: Path,
            upstream_pid: int) -> str:  # fmt: skip
    if name == "open":
        return measure_open(args, group, upstream_pid)
    api = group[0]
    key = (Path(api.env["SOMA_DATA_DIR"]) / "admin.key").read_text().strip()
    sessions, _ = asyncio.run(prepare(api, key, args.sessions, args.tool))
    lua = workdir / f"{name}.lua"
    query = "?wait=true" if name == "turns" else ""
    quoted = ",".join(f'"{s}"' for s in sessions)
    body = message_body(args).decode().replace("\\", "\\\\").replace("'", "\\'")
    lua.write_text(LUA % {"sessions": quoted, "key": key, "query": query, "body": body})
    before = [asyncio.run(metrics_of(p)) for p in group]
    processes = {f"platform[{i}]": [psutil.Process(p.process.pid)] for i, p in enumerate(group)}
    processes["upstream"] = [psutil.Process(upstream_pid)]
    processes["servers"] = server_processes()
    # Warm up (connections, caches) before the measured window.
    _, warm = run_wrk(lua, api.base_url, args.connections, 2)
    warm.communicate()
    command, wrk = run_wrk(lua, api.base_url, args.connections, args.duration)
    processes["wrk"] = [psutil.Process(wrk.pid)]
    profile = args.profile / f"{name}-{{}}.txt" if args.profile else None
    spies = [
        start_profile(p.process.pid, args.duration - 1, Path(str(profile).format(i)))
        for i, p in enumerate(group)
    ] if profile else []  # fmt: skip
    with CpuWindow(processes) as cpu:
        output, _ = wrk.communicate()
    for spy in spies:
        spy.wait(timeout=60)
    after = [asyncio.run(metrics_of(p)) for p in group]
    rate, total, pct, errors = parse_wrk(output)
    counted = Counter[str]()
    for b, a in zip(before, after, strict=True):
        for k, v in a.items():
            if k.startswith(("soma_runs_total{", "soma_messages_accepted_total",
                             "soma_db_busy_retries_total")):  # fmt: skip
                counted[k] += int(v - b.get(k, 0.0))
    platform_cpu = sum(v for k, v in cpu.seconds.items() if k.startswith("platform"))
    ops = rate * cpu.wall
    lines = [
        f"== {name} · {args.stack} · shape {args.shape} ({len(group)} processes) · "
        f"{args.connections} connections, "
        f"{len(sessions)} sessions",
        f"command : {command}",
        f"rate    : {total} requests, {rate:,.0f}/s {errors}",
        "latency : " + "  ".join(f"p{k} {v:.1f} ms" for k, v in pct.items()),
        "cpu     : "
        + ", ".join(f"{k} {100 * v / cpu.wall:.0f}%" for k, v in cpu.seconds.items())
        + f"; machine busy {cpu.machine_pct:.0f}% of {100 * (psutil.cpu_count() or 1)}%",
        f"platform: {1000 * platform_cpu / max(ops, 1):.3f} ms CPU per "
        f"{'accepted message' if name == 'accept' else 'full turn'}",
        f"server  : {dict(counted)}",
    ]
    if profile:
        lines += [profile_summary(Path(str(profile).format(i)), args.duration, 25)
                  for i in range(len(group))]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=("embedded", "distributed"), default="embedded")
    parser.add_argument("--shape", choices=SHAPES, default="one")
    parser.add_argument("--apis", type=int, default=1, help="API processes in --shape split")
    parser.add_argument("--measure", action="append", choices=("accept", "turns", "open"))
    parser.add_argument("--rate", type=float, default=500.0, help="open loop: turns/s offered")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sessions", type=int, default=1024)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the platform")
    parser.add_argument("--profile", type=Path, help="py-spy each platform process into DIR")
    parser.add_argument("--tool", help="every turn calls this tool once (e.g. files)")
    parser.add_argument("--tool-args", default='{"op": "list", "path": "."}')
    args = parser.parse_args()
    if args.shape == "split" and args.stack != "distributed":
        parser.error("--shape split needs --stack distributed (shared servers)")
    extra = dict(item.split("=", 1) for item in args.env)
    with ExitStack() as stop, backends(args.stack) as backend_env:
        workdir = Path(stop.enter_context(tempfile.TemporaryDirectory(prefix="soma-wrk-")))
        tools = ("--tools",) if args.tool else ()
        upstream = start_upstream("--instant", "--reply", "ok", *tools)
        stop.callback(upstream.process.wait, 10)
        stop.callback(upstream.process.terminate)
        model = {"SOMA_LLM__DEFAULT_MODEL": "bench", "SOMA_LLM__MODELS__BENCH__PROVIDER": "openai",
                 "SOMA_LLM__MODELS__BENCH__BASE_URL": upstream.base_url,
                 "SOMA_LLM__MODELS__BENCH__MODEL": "instant"}  # fmt: skip
        for name in args.measure or ("accept", "turns"):
            env = {**QUIET, **model, **backend_env(), **extra}
            if name == "accept" and args.shape == "one":
                env.setdefault("SOMA_SERVICES", "gateway")
            with platforms(workdir, env, args.shape, args.apis) as group:
                print(measure(name, args, group, workdir, upstream.process.pid), flush=True)


if __name__ == "__main__":
    main()
