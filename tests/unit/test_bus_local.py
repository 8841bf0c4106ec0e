"""The in-process bus: groups, backpressure, retention, restart redelivery, lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from soma.bus.local import LocalBus
from soma.bus.port import BusError, Delivery
from soma.config.settings import BusSettings
from soma.core.service import HealthStatus
from soma.observability.metrics import Metrics

TOPIC = "conversation.inbound"


async def eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.fixture
async def bus() -> AsyncIterator[LocalBus]:
    settings = BusSettings(
        max_attempts=3, retry_backoff_s=0.001, retry_backoff_max_s=0.002, local_capacity=5
    )
    bus = LocalBus(settings, Metrics())
    await bus.start()
    yield bus
    await bus.stop()


async def test_each_group_gets_every_message(bus: LocalBus) -> None:
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    for group in got:
        await bus.subscribe(TOPIC, group, lambda d, g=group: _append(got[g], d))  # type: ignore[misc]
    for i in range(20):
        await bus.publish(TOPIC, f"k{i % 3}", b"%d" % i)
    await eventually(lambda: all(len(v) == 20 for v in got.values()))
    assert sorted(got["a"]) == sorted(got["b"]) == sorted(b"%d" % i for i in range(20))


async def _append(into: list[bytes], delivery: Delivery) -> None:
    into.append(delivery.value)


async def test_publish_waits_while_the_slowest_group_is_full(bus: LocalBus) -> None:
    release = asyncio.Event()

    async def blocked(delivery: Delivery) -> None:
        await release.wait()

    await bus.subscribe(TOPIC, "slow", blocked)
    for i in range(5):
        await bus.publish(TOPIC, "k", b"%d" % i)
    sixth = asyncio.create_task(bus.publish(TOPIC, "k", b"5"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not sixth.done()
    release.set()
    await asyncio.wait_for(sixth, 10)
    assert sixth.exception() is None


async def test_a_topic_without_groups_keeps_the_newest_messages(bus: LocalBus) -> None:
    for i in range(8):
        await bus.publish(TOPIC, "k", b"%d" % i)
    got: list[bytes] = []
    await bus.subscribe(TOPIC, "late", lambda d: _append(got, d))
    await eventually(lambda: len(got) == 5)
    assert got == [b"3", b"4", b"5", b"6", b"7"]


async def test_unacked_deliveries_come_again_after_a_restart(bus: LocalBus) -> None:
    seen: list[tuple[bytes, int]] = []
    block = True

    async def handler(delivery: Delivery) -> None:
        seen.append((delivery.value, delivery.attempt))
        if block and delivery.value == b"2":
            await asyncio.sleep(60)

    await bus.subscribe(TOPIC, "g", handler)
    for i in range(4):
        await bus.publish(TOPIC, "k", b"%d" % i)
    await eventually(lambda: (b"2", 1) in seen)
    await bus.stop()
    block = False
    await bus.start()
    await eventually(lambda: (b"3", 1) in seen)
    assert [value for value, _ in seen] == [b"0", b"1", b"2", b"2", b"3"]


async def test_lifecycle_and_health() -> None:
    bus = LocalBus(BusSettings(), Metrics())
    assert bus.name == "bus"
    assert (await bus.health()).status == HealthStatus.STOPPED
    with pytest.raises(BusError, match="not running"):
        await bus.publish(TOPIC, "k", b"v")
    await bus.start()
    await bus.subscribe(TOPIC, "g", lambda d: asyncio.sleep(0))
    with pytest.raises(ValueError, match="already consumes"):
        await bus.subscribe(TOPIC, "g", lambda d: asyncio.sleep(0))
    health = await bus.health()
    assert health.status == HealthStatus.HEALTHY
    assert "1 consumer groups" in health.detail
    await bus.stop()
    assert (await bus.health()).status == HealthStatus.STOPPED


async def test_published_consumed_and_lag_metrics() -> None:
    metrics = Metrics()
    bus = LocalBus(BusSettings(), metrics)
    await bus.start()
    done: list[bytes] = []
    await bus.subscribe(TOPIC, "g", lambda d: _append(done, d))
    for i in range(3):
        await bus.publish(TOPIC, "k", b"%d" % i)
    await eventually(lambda: len(done) == 3)
    value_of = metrics.registry.get_sample_value
    assert value_of("soma_bus_published_total", {"topic": TOPIC}) == 3
    assert value_of("soma_bus_consumed_total", {"topic": TOPIC, "group": "g", "outcome": "ok"}) == 3
    lag = {"topic": TOPIC, "group": "g"}
    await eventually(lambda: value_of("soma_bus_consumer_lag", lag) == 0)
    await bus.stop()
