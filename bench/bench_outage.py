"""How soon requests waiting out a model outage are answered once the upstream is back.

    .venv/bin/python -m bench.bench_outage --waiters 30 --down 3 --rounds 5

Per round: the `llm` service against a scripted upstream (a real HTTP server), the upstream
stopped, `--waiters` chats started (they wait, the circuit opens), the upstream restarted on
the same port after `--down` seconds; prints the time from the restart to the first and to
the last answer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time

from soma.config.settings import LLMSettings, ModelSettings, Settings
from soma.llm.service import LLMService
from soma.llm.types import ChatMessage, ChatRequest
from soma.observability.metrics import Metrics
from tests.support.scripted_llm import ScriptedLLM


async def one_round(waiters: int, down_s: float, probe_interval_s: float) -> tuple[float, float]:
    first = ScriptedLLM().start()
    model = ModelSettings(provider="openai", base_url=first.base_url, model="m", timeout_s=5)
    llm = LLMSettings(default_model="gpt", models={"gpt": model}, probe_interval_s=probe_interval_s)
    service = LLMService(Settings(llm=llm), Metrics())
    await service.start()
    first.stop()
    asks = [ChatRequest([ChatMessage("user", f"question {i}")]) for i in range(waiters)]
    pending = [asyncio.create_task(service.router.complete(None, ask)) for ask in asks]
    while service.router.open_circuits() != ["gpt"]:
        await asyncio.sleep(0.05)
    await asyncio.sleep(down_s)
    back = ScriptedLLM(port=first.port).start()
    restarted = time.perf_counter()
    answered = []
    try:
        for done in asyncio.as_completed(pending):
            await done
            answered.append(time.perf_counter() - restarted)
    finally:
        await service.stop()
        back.stop()
    return answered[0], answered[-1]


async def run(args: argparse.Namespace) -> None:
    firsts, lasts = [], []
    for _ in range(args.rounds):
        first, last = await one_round(args.waiters, args.down, args.probe_interval)
        firsts.append(first * 1000)
        lasts.append(last * 1000)

    def shown(values: list[float]) -> str:
        each = ", ".join(f"{v:.0f}" for v in values)
        return f"{each} ms (median {statistics.median(values):.0f})"

    print(f"upstream restarted → first answer: {shown(firsts)}")
    print(f"upstream restarted → all {args.waiters} answered: {shown(lasts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Resume time of requests after an outage.")
    parser.add_argument("--waiters", type=int, default=30)
    parser.add_argument("--down", type=float, default=3.0, help="seconds the upstream is down")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--probe-interval", type=float, default=0.5, help="llm.probe_interval_s")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
