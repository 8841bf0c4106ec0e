"""Throughput and latency of durable runs against the real `python -m orchestrator.main`.

    .venv/bin/python -m bench.bench_runs --stack embedded|distributed [--profile DIR]

Measurements `accept`, `turns` and `open`, each on a fresh platform: see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.platform import Platform, launch
from tests.e2e.stacks import Upstream, start_upstream
from tests.harness.kafka import TansuBroker
from tests.harness.postgres import create_database, drop_database, start_postgres
from tests.harness.redis import start_redis

MEASUREMENTS = ("accept", "turns", "open")
TERMINAL = ("completed", "failed", "cancelled")
REQUEST_TIMEOUT_S = 60.0
QUIET = {
    "SOMA_OBSERVABILITY__LOG_LEVEL": "WARNING",
    "SOMA_OBSERVABILITY__ACCESS_LOG": "false",
    # Limits stay on (their checks are part of the cost measured) but never refuse the load.
    "SOMA_LIMITS__KEY_REQUESTS_PER_S": "1000000",
    "SOMA_LIMITS__KEY_BURST": "1000000",
    "SOMA_LIMITS__TENANT_REQUESTS_PER_S": "1000000",
    "SOMA_LIMITS__TENANT_BURST": "1000000",
    "SOMA_LIMITS__MAX_INFLIGHT_RUNS": "10000000",
}
PROFILE_HZ = 100


@dataclass
class Tally:
    """What the clients saw in one measurement; latencies in seconds."""

    outcomes: Counter[str] = field(default_factory=Counter)
    accept: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    send_lag: list[float] = field(default_factory=list)
    first_send: float = 0.0
    last_end: float = 0.0

    def count(self, outcome: str, end: float) -> None:
        self.outcomes[outcome] += 1
        self.last_end = max(self.last_end, end)


Turn = Callable[[httpx.AsyncClient, str, float, Tally], Awaitable[None]]


async def post_accept(client: httpx.AsyncClient, session: str, began: float, tally: Tally) -> None:
    """One POST that only queues the run."""
    response = await client.post(f"/v1/sessions/{session}/messages", json={"content": "hi"})
    end = time.perf_counter()
    tally.count(str(response.status_code), end)
    if response.status_code == 202:
        tally.accept.append(end - began)


async def stream_turn(client: httpx.AsyncClient, session: str, began: float, tally: Tally) -> None:
    """POST ?stream=true: headers arrive once the run is queued and the body ends with its
    terminal event, so one request gives both submit→accepted and submit→completed."""
    path = f"/v1/sessions/{session}/messages"
    async with client.stream("POST", path, params={"stream": "true"}, json={"content": "hi"}) as r:
        accepted = time.perf_counter()
        body = b"".join([chunk async for chunk in r.aiter_bytes()])
    end = time.perf_counter()
    outcome = next((t for t in TERMINAL if f"event: run.{t}\n".encode() in body), "no terminal")
    tally.count(outcome if r.status_code == 200 else str(r.status_code), end)
    if r.status_code == 200 and outcome == "completed":
        tally.accept.append(accepted - began)
        tally.done.append(end - began)


async def wait_turn(client: httpx.AsyncClient, session: str, began: float, tally: Tally) -> None:
    """POST ?wait=true: 200 with the finished run (the server reads run and reply after)."""
    path = f"/v1/sessions/{session}/messages"
    response = await client.post(path, params={"wait": "true"}, json={"content": "hi"})
    end = time.perf_counter()
    ok = response.status_code == 200
    outcome = str(response.json()["run"]["status"]) if ok else str(response.status_code)
    tally.count(outcome, end)
    if outcome == "completed":
        tally.done.append(end - began)


async def guarded(turn: Turn, client: httpx.AsyncClient, session: str, began: float,
                  tally: Tally) -> None:  # fmt: skip
    try:
        await turn(client, session, began, tally)
    except httpx.HTTPError as exc:
        tally.count(type(exc).__name__, time.perf_counter())


async def closed_loop(client: httpx.AsyncClient, sessions: list[str], clients: int,
                      duration: float, turn: Turn) -> Tally:  # fmt: skip
    """`clients` loops, each over its own sessions, starting requests until the deadline."""
    deadline = (tally := Tally(first_send=time.perf_counter())).first_send + duration

    async def one(mine: list[str]) -> None:
        index = 0
        while (began := time.perf_counter()) < deadline:
            await guarded(turn, client, mine[index % len(mine)], began, tally)
            index += 1

    await asyncio.gather(*(one(sessions[i::clients]) for i in range(clients)))
    return tally


async def open_loop(client: httpx.AsyncClient, sessions: list[str], rate: float,
                    duration: float, max_in_flight: int, turn: Turn) -> Tally:  # fmt: skip
    """Start request i at t0 + i/rate whatever the answers do; latency counts from that
    scheduled instant, so falling behind shows up (no coordinated omission)."""
    tally = Tally(first_send=time.perf_counter())
    total, sent = int(rate * duration), 0
    tasks: set[asyncio.Task[None]] = set()
    while sent < total:
        due = min(total, int((time.perf_counter() - tally.first_send) * rate) + 1)
        for index in range(sent, due):
            scheduled = tally.first_send + index / rate
            if len(tasks) >= max_in_flight:
                tally.outcomes["not sent (in-flight cap)"] += 1
                continue
            tally.send_lag.append(time.perf_counter() - scheduled)
            session = sessions[index % len(sessions)]
            task = asyncio.create_task(guarded(turn, client, session, scheduled, tally))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent = due
        await asyncio.sleep(0.001)
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=REQUEST_TIMEOUT_S)
        for task in pending:
            task.cancel()
        tally.outcomes["unfinished"] += len(pending)
    return tally


class CpuMeter:
    """CPU of this client, the platform (and its main thread), the upstream and the rest of
    the machine by process name (the machine may be shared: foreign load shows up there)."""

    def __init__(self, platform_pid: int, upstream_pid: int) -> None:
        self._platform, self._upstream = psutil.Process(platform_pid), psutil.Process(upstream_pid)
        self._own = {os.getpid(), platform_pid, upstream_pid}

    def _sample(self) -> dict[str, float]:
        main = next(t for t in self._platform.threads() if t.id == self._platform.pid)
        now, wall = psutil.cpu_times(), time.perf_counter()
        sample = {"client": time.process_time(), "main": main.user_time + main.system_time,
                  "orchestrator": sum(self._platform.cpu_times()[:2]), "wall": wall,
                  "upstream": sum(self._upstream.cpu_times()[:2]),
                  "machine": sum(now) - now.idle - now.iowait}  # fmt: skip
        for proc in psutil.process_iter(["name", "cpu_times"]):
            if proc.info["cpu_times"] is not None and proc.pid not in self._own:
                key = f"other:{proc.info['name']}"
                sample[key] = sample.get(key, 0.0) + sum(proc.info["cpu_times"][:2])
        return sample

    def __enter__(self) -> CpuMeter:
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        wall = end["wall"] - self._start["wall"]
        pct = {name: 100 * (end[name] - self._start.get(name, 0.0)) / wall for name in end}
        rest = sorted(((v, k[6:]) for k, v in pct.items() if k[:6] == "other:" and v >= 1))
        others = ", ".join(f"{name} {value:.0f}%" for value, name in reversed(rest[-5:]))
        self.text = (f"client {pct['client']:.0f}%, orchestrator {pct['orchestrator']:.0f}% "
                     f"(main thread {pct['main']:.0f}%), upstream {pct['upstream']:.0f}%; "
                     f"machine busy {pct['machine']:.0f}% of {100 * (psutil.cpu_count() or 1)}%"
                     f"; other processes: {others or 'none'}")  # fmt: skip


def percentiles(values: list[float]) -> str:
    ordered, n = sorted(values), len(values)
    p50, p95, p99 = (ordered[min(n - 1, int(q * n))] * 1000 for q in (0.50, 0.95, 0.99))
    return f"p50 {p50:.1f}  p95 {p95:.1f}  p99 {p99:.1f}  max {ordered[-1] * 1000:.1f} ms  (n={n})"


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    """The platform's /metrics as `name{labels}` → value (one series per key)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families((await client.get("/metrics")).text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def server_lines(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """What the platform itself counted during the window."""
    d = {key: value - before.get(key, 0.0) for key, value in after.items()}
    runs = {k.split('"')[1]: int(v) for k, v in d.items() if k.startswith("soma_runs_total{")}
    accepted = d.get("soma_messages_accepted_total", 0.0)
    txs = sum(v for k, v in d.items() if k.startswith("soma_db_transactions_total{"))
    tx_ms = 1000 * d.get("soma_db_transaction_duration_seconds_sum", 0.0) / max(txs, 1.0)
    per, unit = (runs["completed"], "completed run") if runs.get("completed") else (
        max(accepted, 1), "accepted message")  # fmt: skip
    return [
        f"server  : accepted {accepted:.0f}, run attempts by outcome {runs}, "
        f"outbox relayed {d.get('soma_outbox_relayed_total', 0.0):.0f}",
        f"          write transactions: {txs:.0f} = {txs / per:.1f} per {unit}, mean "
        f"{tx_ms:.1f} ms (incl. waiting for the SQLite write lock or a pool connection)",
    ]


@contextmanager
def backends(stack: str) -> Iterator[Callable[[], dict[str, str]]]:
    """Yield a factory of per-platform env: a fresh database and topic prefix each call."""
    if stack == "embedded":
        yield dict
        return
    with ExitStack() as stop:
        server_url, pg_stop = start_postgres()
        stop.callback(pg_stop)
        redis_url, redis_stop = start_redis()
        stop.callback(redis_stop)
        broker = TansuBroker()
        stop.callback(broker.close)
        broker.start()

        def env() -> dict[str, str]:
            database_url = create_database(server_url, with_vector=True)
            stop.callback(drop_database, server_url, database_url)
            # tansu joins groups slowly with the default timeouts and lacks InitProducerId v0.
            return {"SOMA_DATABASE__URL": database_url, "SOMA_CACHE__URL": redis_url,
                    "SOMA_BUS__BACKEND": "kafka",
                    "SOMA_BUS__KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
                    "SOMA_BUS__KAFKA__TOPIC_PREFIX": f"b{uuid.uuid4().hex[:10]}.",
                    "SOMA_BUS__KAFKA__SESSION_TIMEOUT_MS": "1000",
                    "SOMA_BUS__KAFKA__HEARTBEAT_INTERVAL_MS": "200",
                    "SOMA_BUS__KAFKA__REBALANCE_TIMEOUT_MS": "1000",
                    "SOMA_BUS__KAFKA__IDEMPOTENT_PRODUCER": "false",
                    "SOMA_BUS__KAFKA__FETCH_MAX_WAIT_MS": "20"}  # fmt: skip

        yield env


@contextmanager
def platform(workdir: Path, env: dict[str, str]) -> Iterator[Platform]:
    running = launch(Path(tempfile.mkdtemp(dir=workdir)), env)
    try:
        running.wait_healthy(timeout=90)
        yield running
    finally:
        running.process.kill()  # a no-op once it has exited
        running.process.wait()


def start_profile(pid: int, duration: float, path: Path) -> subprocess.Popen[bytes]:
    """py-spy counting only samples where a thread holds the GIL (`--gil`): without it, idle
    aiosqlite and executor threads blocked in C waits are counted as busy."""
    command = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
               "--duration", str(round(duration)), "--rate", str(PROFILE_HZ), "--gil",
               "--format", "raw", "--output", str(path)]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_summary(path: Path, duration: float, top: int) -> str:
    """Self time by package and function, inclusive time of soma functions."""
    by_package, by_function, inclusive = Counter[str](), Counter[str](), Counter[str]()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if f]
        leaf = frames[-1] if frames else "(no Python frame: uvloop or other C code)"
        by_function[leaf] += int(count)
        by_package[package_of(leaf)] += int(count)
        for frame in set(frames):
            if frame.rsplit("(", 1)[-1].startswith("soma/"):
                inclusive[frame] += int(count)
    total = sum(by_function.values()) or 1
    head = f"{total} GIL-holding samples = {total / PROFILE_HZ:.1f} s of Python in {duration:g} s"
    lines = [f"profile : {head}; raw stacks in {path}"]
    for title, table in (("self time by package", by_package),
                         ("self time by function", by_function),
                         ("inclusive time of soma code", inclusive)):  # fmt: skip
        lines.append(f"  {title} (% of samples):")
        lines += [f"    {100 * n / total:5.1f}%  {k}" for k, n in table.most_common(top)]
    return "\n".join(lines)


def package_of(frame: str) -> str:
    """`fn (sqlalchemy/sql/x.py)` → sqlalchemy; platform code by subpackage (soma.storage)."""
    if not frame.endswith(")"):
        return frame
    parts = frame[frame.rfind("(") + 1 : -1].split("/")
    if parts[0] in ("soma", "orchestrator") and len(parts) > 2:
        return f"{parts[0]}.{parts[1]}"
    return parts[0].removesuffix(".py")


async def make_sessions(client: httpx.AsyncClient, count: int) -> list[str]:
    """Sessions of the default agent; the client's connection limit bounds the concurrency."""
    answers = await asyncio.gather(*(client.post("/v1/sessions", json={}) for _ in range(count)))
    return [str(answer.raise_for_status().json()["id"]) for answer in answers]


async def measure(name: str, args: argparse.Namespace, running: Platform,
                  upstream: Upstream) -> str:  # fmt: skip
    key = (Path(running.env["SOMA_DATA_DIR"]) / "admin.key").read_text().strip()
    size = args.clients if name != "open" else args.max_in_flight
    # Below uvicorn's 5 s keep-alive, so the server never closes a connection being reused.
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=2)
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=running.base_url, timeout=REQUEST_TIMEOUT_S,
                                 headers=auth, limits=limits) as c:  # fmt: skip
        sessions = await make_sessions(c, max(args.sessions, args.clients))
        turn = {"stream": stream_turn, "wait": wait_turn}[args.observe]
        profile = args.profile / f"{name}.txt" if args.profile else None
        spy = start_profile(running.process.pid, args.duration, profile) if profile else None
        before = await scrape(c)
        with CpuMeter(running.process.pid, upstream.process.pid) as cpu:
            if name == "open":
                tally = await open_loop(c, sessions, args.rate, args.duration,
                                        args.max_in_flight, turn)  # fmt: skip
            else:
                turn = post_accept if name == "accept" else turn
                tally = await closed_loop(c, sessions, args.clients, args.duration, turn)
        after = await scrape(c)
    load = f"{args.rate:g}/s offered" if name == "open" else f"{args.clients} clients"
    observe = "" if name == "accept" else f", observed by ?{args.observe}=true"
    title = f"{name} · {args.stack} · {load}, {len(sessions)} sessions{observe}"
    wall = max(tally.last_end - tally.first_send, 1e-9)
    good, what = (len(tally.done), "turns completed") if name != "accept" else (
        len(tally.accept), "accepted (202)")  # fmt: skip
    lines = [f"== {title} " + "=" * max(0, 76 - len(title)),
             f"command : {reproduce(name)}",
             f"outcomes: {dict(tally.outcomes)}",
             f"rate    : {good} {what} in {wall:.2f} s = {good / wall:.1f}/s"]  # fmt: skip
    for label, values in (("submit→accepted ", tally.accept), ("submit→completed", tally.done),
                          ("client send lag ", tally.send_lag)):  # fmt: skip
        if values:
            lines.append(f"{label}: {percentiles(values)}")
    lines.append(f"cpu (% of one core): {cpu.text}")
    lines += server_lines(before, after)
    if spy is not None and profile is not None:
        spy.wait(timeout=args.duration + 30)
        lines.append(profile_summary(profile, args.duration, args.top))
    return "\n".join(lines)


def reproduce(name: str) -> str:
    """This script's own command line, narrowed to the one measurement."""
    argv, rest = [], iter(sys.argv[1:])
    for arg in rest:
        if arg == "--measure":
            next(rest, None)
        elif not arg.startswith("--measure="):
            argv.append(arg)
    return shlex.join([".venv/bin/python", "-m", "bench.bench_runs", *argv, "--measure", name])


def main() -> None:
    parser = argparse.ArgumentParser(description="Throughput and latency of durable runs.")
    parser.add_argument("--stack", choices=("embedded", "distributed"), default="embedded")
    parser.add_argument("--measure", action="append", choices=MEASUREMENTS,
                        help="repeatable; default: all three")  # fmt: skip
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    parser.add_argument("--clients", type=int, default=32, help="closed-loop concurrency")
    parser.add_argument("--sessions", type=int, default=512)
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop turns/s offered")
    parser.add_argument("--max-in-flight", type=int, default=1000, help="open-loop cap")
    parser.add_argument("--observe", choices=("stream", "wait"), default="stream")
    parser.add_argument("--profile", type=Path, help="py-spy the platform: DIR/<measure>.txt")
    parser.add_argument("--top", type=int, default=15, help="rows per profile table")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the platform")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    with ExitStack() as stop, backends(args.stack) as backend_env:
        workdir = Path(stop.enter_context(tempfile.TemporaryDirectory(prefix="soma-bench-")))
        runner = stop.enter_context(asyncio.Runner(loop_factory=uvloop.new_event_loop))
        upstream = start_upstream("--instant", "--reply", "ok")
        stop.callback(upstream.process.wait, 10)
        stop.callback(upstream.process.terminate)
        bench = "SOMA_LLM__MODELS__BENCH__"
        model = {"SOMA_LLM__DEFAULT_MODEL": "bench", f"{bench}PROVIDER": "openai",
                 f"{bench}BASE_URL": upstream.base_url, f"{bench}MODEL": "instant"}  # fmt: skip
        for name in args.measure or MEASUREMENTS:
            env = {**QUIET, **model, **backend_env(), **extra_env}
            with platform(workdir, env) as running:
                print(runner.run(measure(name, args, running, upstream)), flush=True)


if __name__ == "__main__":
    main()
