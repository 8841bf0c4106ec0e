"""DeliveryRunner: retries with backoff, then a dead letter carrying the error."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from soma.bus.dispatch import DeliveryRunner, backoff_s
from soma.bus.metrics import BusMetrics
from soma.bus.port import Delivery, Handler
from soma.observability.metrics import Metrics

Published = list[tuple[str, str, bytes, dict[str, str]]]


def make_runner(
    handler: Handler, published: Published, metrics: Metrics, attempts: int = 3
) -> DeliveryRunner:
    async def publish(topic: str, key: str, value: bytes, headers: Mapping[str, str]) -> None:
        published.append((topic, key, value, dict(headers)))

    return DeliveryRunner(
        group="g",
        handler=handler,
        publish=publish,
        metrics=BusMetrics(metrics),
        max_attempts=attempts,
        backoff_base_s=0.001,
        backoff_max_s=0.002,
    )


DELIVERY = Delivery(topic="tool.requests", key="s1", value=b"v", headers={"traceparent": "tp"})


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, 0.1, 0.5) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]


async def test_failures_are_retried_then_dead_lettered_with_headers() -> None:
    attempts: list[int] = []

    async def handler(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise ValueError("boom")

    published: Published = []
    metrics = Metrics()
    acked = await make_runner(handler, published, metrics).run(DELIVERY)
    assert acked is True
    assert attempts == [1, 2, 3]
    [(topic, key, value, headers)] = published
    assert (topic, key, value) == ("tool.requests.dlq", "s1", b"v")
    assert headers["x-error"] == "ValueError: boom"
    assert headers["x-attempts"] == "3"
    assert headers["x-original-topic"] == "tool.requests"
    assert headers["traceparent"] == "tp"
    labels = {"topic": "tool.requests", "group": "g"}
    value_of = metrics.registry.get_sample_value
    assert value_of("soma_bus_consumed_total", {**labels, "outcome": "retry"}) == 2
    assert value_of("soma_bus_consumed_total", {**labels, "outcome": "dead"}) == 1


async def test_a_handler_cancelling_itself_counts_as_a_failed_attempt() -> None:
    attempts: list[int] = []

    async def handler(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt == 1:
            raise asyncio.CancelledError
        return None

    published: Published = []
    assert await make_runner(handler, published, Metrics()).run(DELIVERY) is True
    assert attempts == [1, 2]
    assert published == []


async def test_cancelling_the_runner_propagates_without_acking() -> None:
    started = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(60)

    published: Published = []
    task = asyncio.create_task(make_runner(handler, published, Metrics()).run(DELIVERY))
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert published == []


async def test_abandoned_deliveries_stop_retrying_unacked() -> None:
    calls = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("fails")

    published: Published = []
    runner = make_runner(handler, published, Metrics(), attempts=5)
    assert await runner.run(DELIVERY, abandoned=lambda: calls >= 2) is False
    assert calls == 2
    assert published == []
