"""Many threads and many coroutines deciding at once all get the table's answers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from soma.config.settings import Settings
from soma.observability.metrics import Metrics
from soma.policy import PolicyService, create_policy
from soma.policy.embedded import EmbeddedPolicy
from tests.support.opa_server import OpaTestServer
from tests.unit.policy_cases import CASES


def run_threads(count: int, work: Callable[[int], list[str]]) -> list[str]:
    """Run `work(index)` on `count` threads started together; collect every mismatch."""
    barrier = threading.Barrier(count)
    mismatches: list[str] = []
    lock = threading.Lock()

    def runner(index: int) -> None:
        barrier.wait()
        try:
            found = work(index)
        except BaseException as exc:
            found = [f"thread {index} raised {exc!r}"]
        with lock:
            mismatches.extend(found)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return mismatches


async def test_evaluate_sync_from_many_threads() -> None:
    engine = EmbeddedPolicy()
    await engine.start()

    def work(index: int) -> list[str]:
        wrong = []
        for round_ in range(20):
            for case in CASES[index % 3 :] + CASES[: index % 3]:
                if engine.evaluate_sync(case.input) != case.expected:
                    wrong.append(f"thread {index} round {round_}: {case.name}")
        return wrong

    assert run_threads(8, work) == []


async def test_service_from_many_threads_each_with_its_own_loop() -> None:
    metrics = Metrics()
    service = create_policy(Settings(), metrics)
    await service.start()

    async def decide_all(index: int) -> list[str]:
        wrong = []
        for case in reversed(CASES) if index % 2 else CASES:
            if await service.decide(case.input) != case.expected:
                wrong.append(f"thread {index}: {case.name}")
        return wrong

    assert run_threads(6, lambda index: asyncio.run(decide_all(index))) == []
    allowed = metrics.registry.get_sample_value(
        "soma_policy_decisions_total", {"action": "conversation.send", "result": "allow"}
    )
    expected = sum(
        1 for c in CASES if c.input.action == "conversation.send" and c.expected.result == "allow"
    )
    assert allowed == 6 * expected


async def test_many_coroutines_embedded_and_opa() -> None:
    with OpaTestServer() as server:
        services: list[PolicyService] = [
            create_policy(Settings(), Metrics()),
            create_policy(
                Settings.model_validate({"policy": {"engine": "opa", "opa_url": server.url}}),
                Metrics(),
            ),
        ]
        for service in services:
            await service.start()
        try:
            work = [(service, case) for service in services for case in CASES * 10]
            decisions = await asyncio.gather(*(s.decide(c.input) for s, c in work))
        finally:
            for service in services:
                await service.stop()
    wrong = [c.name for (_, c), d in zip(work, decisions, strict=True) if d != c.expected]
    assert wrong == []
