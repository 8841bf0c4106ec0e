"""The Bus contract, run against both adapters (local in-process, Kafka on a real broker)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from soma.bus.port import Bus, Delivery, OutgoingMessage
from soma.bus.service import create_bus
from soma.bus.topics import TOOL_REQUESTS, dlq
from soma.config.settings import Settings
from soma.observability.metrics import Metrics

pytestmark = pytest.mark.integration

TOPIC = TOOL_REQUESTS
BusFactory = Callable[[Settings], Awaitable[Bus]]


async def eventually(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def make_bus() -> AsyncIterator[BusFactory]:
    """Creates and starts buses; stops them all after the test."""
    buses: list[Bus] = []

    async def make(settings: Settings) -> Bus:
        bus = create_bus(settings, Metrics())
        buses.append(bus)
        await bus.start()
        return bus

    yield make
    for bus in reversed(buses):
        await bus.stop()


def with_partitions(settings: Settings, partitions: int) -> Settings:
    kafka = settings.bus.kafka.model_copy(update={"partitions": partitions})
    bus = settings.bus.model_copy(update={"kafka": kafka})
    return settings.model_copy(update={"bus": bus})


async def test_order_per_key_holds_while_keys_run_concurrently(
    bus_settings: Settings, make_bus: BusFactory
) -> None:
    bus = await make_bus(bus_settings)
    seen: dict[str, list[int]] = {}
    active = peak = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(random.random() * 0.003)
        active -= 1
        seen.setdefault(delivery.key, []).append(int(delivery.value))

    await bus.subscribe(TOPIC, "order", handler)
    keys, per_key = 20, 15
    await bus.publish_batch(
        [
            OutgoingMessage(TOPIC, f"session-{k}", b"%d" % seq)
            for seq in range(per_key)
            for k in range(keys)
        ]
    )
    await eventually(lambda: sum(map(len, seen.values())) >= keys * per_key)
    assert seen == {f"session-{k}": list(range(per_key)) for k in range(keys)}
    assert peak > 1


async def test_a_slow_key_does_not_block_another_key_in_the_same_partition(
    bus_settings: Settings, make_bus: BusFactory
) -> None:
    bus = await make_bus(with_partitions(bus_settings, 1))
    release = asyncio.Event()
    done: list[str] = []

    async def handler(delivery: Delivery) -> None:
        if delivery.key == "slow":
            await release.wait()
        done.append(delivery.key)

    await bus.subscribe(TOPIC, "hol", handler)
    await bus.publish(TOPIC, "slow", b"0")
    for i in range(10):
        await bus.publish(TOPIC, "fast", b"%d" % i)
    await eventually(lambda: done.count("fast") == 10)
    assert "slow" not in done
    release.set()
    await eventually(lambda: "slow" in done)


async def test_unacked_messages_are_delivered_again_to_the_next_consumer(
    bus_settings: Settings, make_bus: BusFactory
) -> None:
    first = await make_bus(bus_settings)
    seen: list[int] = []
    block = True

    async def handler(delivery: Delivery) -> None:
        seen.append(int(delivery.value))
        if block and delivery.value == b"3":
            await asyncio.sleep(3600)

    await first.subscribe(TOPIC, "redeliver", handler)
    for i in range(8):
        await first.publish(TOPIC, "session", b"%d" % i)
    await eventually(lambda: 3 in seen)
    # The consumer goes away while handling 3: 0..2 were acked, 3..7 were not.
    await first.stop()
    block = False
    seen.clear()
    if bus_settings.bus.backend == "kafka":
        second = await make_bus(bus_settings)
        await second.subscribe(TOPIC, "redeliver", handler)
    else:
        await first.start()  # the in-process bus keeps its state across a restart
    await eventually(lambda: 7 in seen)
    assert seen == [3, 4, 5, 6, 7]


async def test_a_failed_or_cancelled_handler_gets_the_message_again(
    bus_settings: Settings, make_bus: BusFactory
) -> None:
    bus = await make_bus(bus_settings)
    calls: list[tuple[str, int]] = []

    async def handler(delivery: Delivery) -> None:
        value = delivery.value.decode()
        calls.append((value, delivery.attempt))
        if delivery.attempt == 1 and value == "raises":
            raise ConnectionError("downstream hiccup")
        if delivery.attempt == 1 and value == "cancelled":
            raise asyncio.CancelledError

    await bus.subscribe(TOPIC, "retry", handler)
    await bus.publish(TOPIC, "a", b"raises")
    await bus.publish(TOPIC, "b", b"cancelled")
    await eventually(lambda: len(calls) == 4)
    assert sorted(calls) == [("cancelled", 1), ("cancelled", 2), ("raises", 1), ("raises", 2)]


async def test_poison_messages_go_to_the_dlq_with_the_error(
    bus_settings: Settings, make_bus: BusFactory
) -> None:
    bus = await make_bus(bus_settings)
    attempts: list[int] = []
    handled: list[bytes] = []
    dead: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        if delivery.value == b"poison":
            attempts.append(delivery.attempt)
            raise RuntimeError("cannot parse poison")
        handled.append(delivery.value)

    async def dead_letters(delivery: Delivery) -> None:
        dead.append(delivery)

    await bus.subscribe(TOPIC, "worker", handler)
    await bus.subscribe(dlq(TOPIC), "admin", dead_letters)
    await bus.publish(TOPIC, "session", b"poison", {"traceparent": "00-abc-def-01"})
    await bus.publish(TOPIC, "session", b"after")
    await eventually(lambda: len(dead) == 1 and handled == [b"after"])
    assert attempts == [1, 2, 3]
    [letter] = dead
    assert (letter.topic, letter.key, letter.value) == (dlq(TOPIC), "session", b"poison")
    assert letter.headers["x-error"] == "RuntimeError: cannot parse poison"
    assert letter.headers["x-attempts"] == "3"
    assert letter.headers["x-original-topic"] == TOPIC
    assert letter.headers["traceparent"] == "00-abc-def-01"


async def test_every_group_gets_every_message(bus_settings: Settings, make_bus: BusFactory) -> None:
    bus = await make_bus(bus_settings)
    got: dict[str, list[bytes]] = {"memory": [], "audit": []}
    for group, into in got.items():

        async def handler(delivery: Delivery, into: list[bytes] = into) -> None:
            into.append(delivery.value)

        await bus.subscribe(TOPIC, group, handler)
    for i in range(30):
        await bus.publish(TOPIC, f"s{i % 5}", b"%d" % i)
    await eventually(lambda: all(len(v) >= 30 for v in got.values()))
    expected = sorted(b"%d" % i for i in range(30))
    assert sorted(got["memory"]) == sorted(got["audit"]) == expected


async def test_a_small_prefetch_holds_fetching_back_without_losing_anything(
    bus_settings: Settings, make_bus: BusFactory
) -> None:
    small = bus_settings.bus.model_copy(update={"prefetch": 4, "concurrency": 2})
    bus = await make_bus(bus_settings.model_copy(update={"bus": small}))
    seen: dict[str, list[int]] = {}

    async def handler(delivery: Delivery) -> None:
        await asyncio.sleep(0.001)
        seen.setdefault(delivery.key, []).append(int(delivery.value))

    await bus.subscribe(TOPIC, "small", handler)
    await bus.publish_batch([OutgoingMessage(TOPIC, f"s{i % 4}", b"%d" % i) for i in range(80)])
    await eventually(lambda: sum(map(len, seen.values())) >= 80)
    assert seen == {f"s{k}": list(range(k, 80, 4)) for k in range(4)}
