"""Process start → ready and SIGTERM → exit of `python -m orchestrator.main`, idle.

Usage: .venv/bin/python bench/bench_lifecycle.py [--runs 5] [-- extra orchestrator args]
Ready means `/v1/health/ready` answers 200. Prints one line per run and the medians.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def one_run(extra: list[str], env_extra: dict[str, str]) -> tuple[float, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOMA_")}
        env.update({"SOMA_HTTP__PORT": str(port), "SOMA_DATA_DIR": data, **env_extra})
        began = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.main", *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/v1/health/ready"
        with httpx.Client(timeout=1) as client:
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"orchestrator exited with {process.returncode}")
                try:
                    if client.get(url).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.005)
        ready = time.perf_counter() - began
        stop_began = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        stopped = time.perf_counter() - stop_began
        if code != 0:
            raise SystemExit(f"exit code {code} after SIGTERM")
        return ready, stopped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the process")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    env_extra = dict(item.split("=", 1) for item in args.env)
    readies, stops = [], []
    for index in range(args.runs):
        ready, stopped = one_run(args.extra, env_extra)
        readies.append(ready)
        stops.append(stopped)
        print(
            f"run {index + 1}: start→ready {ready * 1000:.0f} ms, "
            f"SIGTERM→exit {stopped * 1000:.0f} ms"
        )
    print(
        f"median over {args.runs}: start→ready {statistics.median(readies) * 1000:.0f} ms, "
        f"SIGTERM→exit {statistics.median(stops) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
