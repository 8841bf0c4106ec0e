"""Added latency and CPU of the Chat Completions door over the native API, driven by `wrk`.

    .venv/bin/python -m bench.bench_doors --seconds 10
    .venv/bin/python -m bench.bench_doors --stack distributed --seconds 10

Against one platform (`--stack embedded`: SQLite and the in-process bus; `distributed`: a
throwaway PostgreSQL, Redis and tansu from `tests/harness`) and an instant scripted upstream,
`wrk --latency` drives, in turn and for `--rounds` A/B rounds (medians reported): the native
`POST /v1/sessions/{id}/messages?wait=true` (over 64 sessions), a non-streaming
`POST /v1/chat/completions` and a streaming one (stateless: a new session each). Each line:
p50/p99 latency, requests/s and the platform process's CPU per request (psutil, over the
window; the servers of `distributed` not counted), at 1 connection (added latency) and at 16
(throughput, CPU per request).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.bench_runs import backends
from tests.e2e.platform import launch
from tests.e2e.stacks import FAST_RECOVERY, start_upstream

LUA = """
local paths = {%(paths)s}
local i = 0
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
request = function()
  i = i + 1
  return wrk.format(nil, paths[(i %% #paths) + 1])
end
"""
_PERCENTILE = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}
SESSIONS = 64
"""Native turns rotate over this many sessions: one session runs one turn at a time."""


def run_wrk(
    base: str, paths: list[str], key: str, body: str, seconds: int, connections: int, work: Path
) -> dict[str, float]:
    script = work / "post.lua"
    listed = ", ".join(f'"{path}"' for path in paths)
    script.write_text(LUA % {"paths": listed, "body": body, "key": key})
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
               str(script), base]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    found = {p: float(v) * _UNIT[u] for p, v, u in _PERCENTILE.findall(done.stdout)}
    rate = _RATE.search(done.stdout)
    if rate is None or "50" not in found:
        raise RuntimeError(f"unparsable wrk output:\n{done.stdout}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests:\n{done.stdout}")
    return {"p50_ms": found["50"], "p99_ms": found.get("99", 0.0), "rps": float(rate.group(1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, action="append", help="default: 1 and 16")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (median reported)")
    parser.add_argument("--stack", choices=("embedded", "distributed"), default="embedded")
    args = parser.parse_args()
    upstream = start_upstream("--chunks", "1", "--instant")
    with tempfile.TemporaryDirectory() as tmp, backends(args.stack) as stack_env:
        work = Path(tmp)
        env = {
            **stack_env(),
            **FAST_RECOVERY,
            "SOMA_LLM__DEFAULT_MODEL": "fast",
            "SOMA_LLM__MODELS__FAST__PROVIDER": "openai",
            "SOMA_LLM__MODELS__FAST__BASE_URL": upstream.base_url,
            "SOMA_LLM__MODELS__FAST__MODEL": "instant",
            "SOMA_OBSERVABILITY__LOG_LEVEL": "WARNING",
        }
        platform = launch(work, env)
        try:
            platform.wait_healthy(timeout=90)
            key = (work / "data" / "admin.key").read_text().strip()
            headers = {"Authorization": f"Bearer {key}"}
            sessions = [
                httpx.post(f"{platform.base_url}/v1/sessions", json={}, headers=headers)
                .raise_for_status().json()["id"]
                for _ in range(SESSIONS)
            ]  # fmt: skip
            chat = '{"model":"assistant","messages":[{"role":"user","content":"hi"}]%s}'
            cases = {
                "native ?wait=true": (
                    [f"/v1/sessions/{s}/messages?wait=true" for s in sessions],
                    '{"content":"hi"}'),
                "chat.completions": (["/v1/chat/completions"], chat % ""),
                "chat.completions stream": (["/v1/chat/completions"], chat % ',"stream":true'),
            }  # fmt: skip
            process = psutil.Process(platform.process.pid)
            print(f"stack: {args.stack}")
            print(f"{'case':26} {'conns':>5} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
                  f"{'CPU ms/req':>11}")  # fmt: skip
            for connections in args.connections or [1, 16]:
                measured: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
                for _ in range(args.rounds):
                    for name, (paths, body) in cases.items():
                        run_wrk(platform.base_url, paths, key, body, 1, connections, work)
                        before, started = process.cpu_times(), time.monotonic()
                        result = run_wrk(platform.base_url, paths, key, body, args.seconds,
                                         connections, work)  # fmt: skip
                        after, elapsed = process.cpu_times(), time.monotonic() - started
                        cpu_s = (after.user - before.user) + (after.system - before.system)
                        result["cpu_ms"] = 1000 * cpu_s / (result["rps"] * elapsed)
                        measured[name].append(result)
                for name, results in measured.items():
                    mid = {k: statistics.median(r[k] for r in results) for k in results[0]}
                    print(f"{name:26} {connections:5d} {mid['p50_ms']:8.2f} {mid['p99_ms']:8.2f} "
                          f"{mid['rps']:8.1f} {mid['cpu_ms']:11.2f}")  # fmt: skip
        finally:
            platform.process.terminate()
            platform.process.wait(timeout=30)
            upstream.process.terminate()
            upstream.process.wait(timeout=10)


if __name__ == "__main__":
    main()
