"""LLM layer overhead and local-model speed.

Usage: .venv/bin/python bench/bench_llm.py [--requests 2000] [--local-runs 3] [--skip-local]

1. Added latency of `OpenAIProvider` (and of `ModelRouter` on top) over hand-written httpx calls
   to an instant OpenAI-compatible upstream (the scripted server in its own process, so the two
   never share a GIL). Direct and provider calls alternate, so drift hits both alike.
   - complete: whole streamed reply assembled (provider.complete vs httpx SSE read + JSON parse)
   - first chunk: time to the first content chunk of a stream
   Goal: < 1 ms median added latency.
2. The bundled SmolLM2 GGUF through `LocalProvider`: time to first token and tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson

from soma.config.settings import LLMSettings, ModelSettings
from soma.llm.local import LocalProvider
from soma.llm.metrics import LLMMetrics
from soma.llm.openai import OpenAIProvider
from soma.llm.router import ModelRouter
from soma.llm.types import ChatMessage, ChatRequest
from soma.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
Call = Callable[[], Awaitable[object]]
REQUEST = ChatRequest([ChatMessage("system", "be brief"), ChatMessage("user", "hello there")])
BODY = {
    "model": "bench",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
    ],
    "stream": True,
    "stream_options": {"include_usage": True},
}


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.scripted_llm", "--instant", "--reply", "ok"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        raise SystemExit(f"scripted upstream did not start: {line!r}")
    return process, line.removeprefix("READY ")


async def direct_complete(client: httpx.AsyncClient, url: str) -> str:
    text = []
    async with client.stream("POST", url, content=orjson.dumps(BODY)) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            for choice in json.loads(data).get("choices", []):
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


async def direct_first_chunk(client: httpx.AsyncClient, url: str) -> str:
    async with client.stream("POST", url, content=orjson.dumps(BODY)) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                choices = json.loads(line[6:]).get("choices", [])
                if choices and choices[0]["delta"].get("content"):
                    return str(choices[0]["delta"]["content"])
    return ""


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    began = time.perf_counter()
    await call()
    return time.perf_counter() - began


def summary(label: str, direct: list[float], ours: list[float]) -> None:
    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    d50, o50 = statistics.median(direct), statistics.median(ours)
    d99, o99 = pct(direct, 0.99), pct(ours, 0.99)
    print(
        f"{label:<28} direct p50 {d50 * 1e3:7.3f} ms p99 {d99 * 1e3:7.3f} ms | "
        f"ours p50 {o50 * 1e3:7.3f} ms p99 {o99 * 1e3:7.3f} ms | "
        f"added p50 {(o50 - d50) * 1e3:+7.3f} ms p99 {(o99 - d99) * 1e3:+7.3f} ms"
    )


async def bench_http(base_url: str, requests: int) -> None:
    url = f"{base_url}/chat/completions"
    provider = OpenAIProvider("bench", base_url, "bench", timeout_s=10)
    settings = LLMSettings(
        default_model="bench",
        models={"bench": ModelSettings(provider="openai", base_url=base_url)},
    )
    local = LocalProvider("local")
    router = ModelRouter(settings, LLMMetrics(Metrics()), {"bench": provider, "local": local})

    async def provider_first() -> None:
        stream = provider.stream(REQUEST)
        await anext(stream)
        await stream.aclose()

    async with httpx.AsyncClient(
        timeout=10,
        limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256),
        headers={"Content-Type": "application/json"},
    ) as client:

        def whole() -> Awaitable[object]:
            return direct_complete(client, url)

        def first() -> Awaitable[object]:
            return direct_first_chunk(client, url)

        cases: list[tuple[str, Call, Call]] = [
            ("complete (provider)", whole, lambda: provider.complete(REQUEST)),
            ("complete (router+provider)", whole, lambda: router.complete("bench", REQUEST)),
            ("first chunk (provider)", first, provider_first),
        ]
        for label, direct_call, our_call in cases:
            for _ in range(max(50, requests // 10)):  # warm-up: pools, JIT-free caches
                await direct_call()
                await our_call()
            direct: list[float] = []
            ours: list[float] = []
            for _ in range(requests):
                direct.append(await timed(direct_call))
                ours.append(await timed(our_call))
            summary(label, direct, ours)
    await provider.aclose()
    await local.aclose()


async def bench_local(runs: int) -> None:
    provider = LocalProvider("local", context_tokens=2048, timeout_s=120)
    began = time.perf_counter()
    await provider.load()
    print(f"local load {time.perf_counter() - began:.3f} s ({provider.describe()})")
    request = ChatRequest([ChatMessage("user", "Tell me a story about a robot.")], max_tokens=128)
    for run in range(runs):
        began = time.perf_counter()
        first = 0.0
        usage = None
        async for chunk in provider.stream(request):
            if not first:
                first = time.perf_counter() - began
            usage = chunk.usage or usage
        total = time.perf_counter() - began
        tokens = usage.completion_tokens if usage else 0
        rate = (tokens - 1) / (total - first) if tokens > 1 and total > first else 0.0
        print(
            f"local run {run + 1}: first token {first * 1e3:6.1f} ms, {tokens} tokens"
            f" in {total:.2f} s, {rate:.1f} tokens/s after the first"
        )
    await provider.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--local-runs", type=int, default=3)
    parser.add_argument("--skip-local", action="store_true")
    args = parser.parse_args()
    process, base_url = start_upstream()
    try:
        asyncio.run(bench_http(base_url, args.requests))
    finally:
        process.terminate()
        process.wait(timeout=10)
    if not args.skip_local:
        asyncio.run(bench_local(args.local_runs))


if __name__ == "__main__":
    main()
