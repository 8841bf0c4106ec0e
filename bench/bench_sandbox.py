"""Sandbox cost: start (with its probe), latency and CPU of one `python` call at each level.

Usage: .venv/bin/python -m bench.bench_sandbox [--calls 200] [--concurrency 8] [--starts 10]
Each call is `print(1)` through the `python` tool. CPU is split into the platform process (the
supervising event loop), its reaped children (getrusage: bwrap, setpriv, prlimit and, at the
rlimits level, the interpreter) and the interpreter as it reports itself in a second pass: under
bubblewrap the sandbox's own pid 1 reaps the interpreter, so its CPU never reaches our
RUSAGE_CHILDREN. As root the rlimits level runs Debian's /usr/bin/python3 (calls drop to an
unprivileged uid, which cannot read an interpreter under /root); bubblewrap runs the platform's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soma.config.tools import SandboxSettings, ToolsSettings
from soma.tools.port import ToolCallContext
from soma.tools.sandbox.program import Program
from soma.tools.sandbox.provider import SandboxProvider


def settings(level: str, concurrency: int) -> ToolsSettings:
    python = Path("/usr/bin/python3") if level == "rlimits" and os.geteuid() == 0 else None
    return ToolsSettings(
        max_concurrent_calls=concurrency,
        sandbox=SandboxSettings(isolation=level, python=python),  # type: ignore[arg-type]
    )


def cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_level(level: str, args: argparse.Namespace, root: Path) -> None:
    starts = []
    for _ in range(args.starts):
        provider = SandboxProvider(settings(level, args.concurrency))
        began = time.perf_counter()
        await provider.start()
        starts.append((time.perf_counter() - began) * 1000)
        await provider.stop()
    provider = SandboxProvider(settings(level, args.concurrency))
    await provider.start()
    program = Program("python", "print(1)")
    workspaces = []
    for i in range(args.concurrency):
        path = root / level / f"s{i}"
        path.mkdir(parents=True, mode=0o700)
        workspaces.append(path)

    def context(i: int) -> ToolCallContext:
        return ToolCallContext("t", "a", f"s{i}", "r", "c", workspaces[i], 30.0)

    for _ in range(5):  # warm the page cache
        await provider.run(program, context(0))
    latencies = []
    own0, kids0 = cpu()
    for _ in range(args.calls):
        began = time.perf_counter()
        outcome = await provider.run(program, context(0))
        latencies.append((time.perf_counter() - began) * 1000)
        assert outcome.output == "1\n", outcome
    own1, kids1 = cpu()
    n = args.calls
    selfcpu = Program(
        "python",
        "import resource as r\nu = r.getrusage(r.RUSAGE_SELF)\nprint(u.ru_utime + u.ru_stime)",
    )
    inner = 0.0
    for _ in range(min(n, 50)):
        inner += float((await provider.run(selfcpu, context(0))).output)
    inner_ms = inner / min(n, 50) * 1000
    start_p50 = statistics.median(starts)
    print(f"[{level}] start (probe included): p50 {start_p50:.1f} ms over {args.starts}")
    print(
        f"[{level}] python print(1), sequential: p50 {pct(latencies, 0.5):.1f} ms, "
        f"p99 {pct(latencies, 0.99):.1f} ms over {n} calls"
    )
    print(
        f"[{level}] CPU per call: platform {(own1 - own0) / n * 1000:.2f} ms, "
        f"reaped children {(kids1 - kids0) / n * 1000:.2f} ms, "
        f"interpreter (self-reported) {inner_ms:.2f} ms"
    )
    count = args.calls
    began = time.perf_counter()

    async def worker(i: int, share: int) -> None:
        for _ in range(share):
            await provider.run(program, context(i))

    share = count // args.concurrency
    await asyncio.gather(*(worker(i, share) for i in range(args.concurrency)))
    elapsed = time.perf_counter() - began
    done = share * args.concurrency
    print(
        f"[{level}] {args.concurrency} sessions at once: {done / elapsed:.0f} calls/s "
        f"({done} in {elapsed:.2f} s)"
    )
    await provider.stop()


def baseline(args: argparse.Namespace) -> None:
    """The interpreter alone, no sandbox: what isolation adds is the difference."""
    latencies = []
    for _ in range(min(args.calls, 100)):
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-I", "-S", "-c", "print(1)"], check=True, capture_output=True
        )
        latencies.append((time.perf_counter() - began) * 1000)
    print(
        f"[none] bare interpreter spawn: p50 {pct(latencies, 0.5):.1f} ms, "
        f"p99 {pct(latencies, 0.99):.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--levels", default="bubblewrap,rlimits")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    try:
        baseline(args)
        for level in args.levels.split(","):
            await bench_level(level, args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
