"""Kafka-only behaviour: topic layout, health, lag metrics, and a consumer killed with -9."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from soma.bus.kafka import KafkaBus
from soma.bus.port import BusError, Delivery, OutgoingMessage
from soma.bus.topics import CONVERSATION_INBOUND, TOPICS, dlq
from soma.config.settings import Settings
from soma.core.errors import StartupError
from soma.core.service import HealthStatus
from soma.observability.metrics import Metrics
from tests.harness.kafka import TansuBroker, make_bus_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOPIC = CONVERSATION_INBOUND


async def eventually(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    return make_bus_settings("kafka", kafka_bootstrap)


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[KafkaBus]:
    bus = KafkaBus(settings.bus, Metrics())
    await bus.start()
    yield bus
    await bus.stop()


async def test_start_creates_prefixed_topics_and_dlqs(settings: Settings, bus: KafkaBus) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bus.kafka.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    prefix = settings.bus.kafka.topic_prefix
    partitions = {t["topic"]: len(t["partitions"]) for t in described}
    expected = {prefix + name for topic in TOPICS for name in (topic, dlq(topic))}
    assert {name: partitions.get(name) for name in expected} == dict.fromkeys(expected, 3)
    assert bus.physical(TOPIC) == prefix + TOPIC


async def test_a_broker_refusing_the_idempotent_producer_fails_start_in_one_line(
    settings: Settings,
) -> None:
    # tansu 0.6 rejects InitProducerId v0 (all aiokafka sends); real Kafka accepts it.
    kafka = settings.bus.kafka.model_copy(update={"idempotent_producer": True})
    bus = KafkaBus(settings.bus.model_copy(update={"kafka": kafka}), Metrics())
    with pytest.raises(StartupError) as caught:
        await bus.start()
    message = str(caught.value)
    assert message.startswith(f"bus: kafka at {kafka.bootstrap_servers}: the producer was refused")
    assert "InitProducerId" in message and "\n" not in message
    assert (await bus.health()).status == HealthStatus.STOPPED


async def test_lag_and_throughput_metrics(settings: Settings) -> None:
    metrics = Metrics()
    bus = KafkaBus(settings.bus, metrics)
    await bus.start()
    release = asyncio.Event()
    done: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        await release.wait()
        done.append(delivery.value)

    try:
        await bus.subscribe(TOPIC, "lagging", handler)
        await bus.publish_batch([OutgoingMessage(TOPIC, "one-key", b"%d" % i) for i in range(10)])
        value_of = metrics.registry.get_sample_value
        lag = {"topic": TOPIC, "group": "lagging"}
        await eventually(lambda: value_of("soma_bus_consumer_lag", lag) == 10)
        release.set()
        await eventually(lambda: len(done) == 10 and value_of("soma_bus_consumer_lag", lag) == 0)
        assert done == [b"%d" % i for i in range(10)]
        assert value_of("soma_bus_published_total", {"topic": TOPIC}) == 10
        assert value_of("soma_bus_consumed_total", {**lag, "outcome": "ok"}) == 10
    finally:
        await bus.stop()


async def test_health_follows_the_broker() -> None:
    broker = TansuBroker()
    broker.start()
    settings = make_bus_settings("kafka", broker.bootstrap).bus
    kafka = settings.kafka.model_copy(update={"request_timeout_ms": 1000})
    bus = KafkaBus(settings.model_copy(update={"kafka": kafka}), Metrics())
    try:
        await bus.start()
        healthy = await bus.health()
        assert healthy.status == HealthStatus.HEALTHY
        assert broker.bootstrap in healthy.detail
        broker.stop()
        sick = await bus.health()
        assert sick.status == HealthStatus.UNHEALTHY
        assert f"kafka at {broker.bootstrap}: metadata request failed" in sick.detail
        with pytest.raises(BusError, match="kafka did not accept the messages"):
            await bus.publish(TOPIC, "k", b"v")
    finally:
        await bus.stop()
        broker.close()


async def test_a_rebalance_hands_work_over_without_losing_or_reordering_it(
    settings: Settings, bus: KafkaBus
) -> None:
    ids = list(range(240))
    await bus.publish_batch([OutgoingMessage(TOPIC, f"session-{i % 12}", b"%d" % i) for i in ids])
    started: list[tuple[str, int]] = []
    done: set[int] = set()

    def handler_for(member: str) -> Callable[[Delivery], Awaitable[None]]:
        async def handler(delivery: Delivery) -> None:
            started.append((member, int(delivery.value)))
            await asyncio.sleep(0.05)
            done.add(int(delivery.value))

        return handler

    await bus.subscribe(TOPIC, "rebalance", handler_for("first"))
    await eventually(lambda: len(done) >= 20)
    second = KafkaBus(settings.bus, Metrics())
    await second.start()
    try:
        await second.subscribe(TOPIC, "rebalance", handler_for("second"))
        await eventually(lambda: len(done) == len(ids), 60)
    finally:
        await second.stop()
    members = {member for member, _ in started}
    assert members == {"first", "second"}
    first_starts = list(dict.fromkeys(value for _, value in started))
    for key in range(12):
        mine = [v for v in first_starts if v % 12 == key]
        assert mine == sorted(mine), f"session-{key} started out of order"


# --- a consumer process killed with SIGKILL mid-batch -------------------------------------


def applied_ids(path: Path) -> list[str]:
    """Ids the killed consumer applied (a torn last line never counted as applied)."""
    if not path.exists():
        return []
    return [line for line in path.read_text().split("\n")[:-1] if line]


async def _child(bootstrap: str, prefix: str, group: str, out: Path) -> None:
    settings = make_bus_settings("kafka", bootstrap)
    kafka = settings.bus.kafka.model_copy(update={"topic_prefix": prefix})
    bus = KafkaBus(settings.bus.model_copy(update={"kafka": kafka}), Metrics())
    await bus.start()
    sink = out.open("a", buffering=1)

    async def apply(delivery: Delivery) -> None:
        await asyncio.sleep(random.random() * 0.02)
        sink.write(orjson.loads(delivery.value)["id"] + "\n")
        sink.flush()

    await bus.subscribe(TOPIC, group, apply)
    await asyncio.Event().wait()


async def test_a_killed_consumer_loses_nothing_and_idempotent_apply_sees_each_once(
    settings: Settings, bus: KafkaBus, tmp_path: Path
) -> None:
    ids = [f"m{i:03d}" for i in range(300)]
    key_of = {message_id: f"session-{i % 10}" for i, message_id in enumerate(ids)}
    await bus.publish_batch(
        [OutgoingMessage(TOPIC, key_of[i], orjson.dumps({"id": i})) for i in ids]
    )
    out = tmp_path / "applied.txt"
    kafka = settings.bus.kafka
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.test_bus_kafka", "child",
        kafka.bootstrap_servers, kafka.topic_prefix, "crash", str(out),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        await eventually(lambda: len(applied_ids(out)) >= 60 or child.returncode is not None)
        assert child.returncode is None, "the consumer process died by itself"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.returncode is None:
            child.kill()
        _, errors = await child.communicate()
    assert child.returncode == -signal.SIGKILL, errors.decode()
    by_child = applied_ids(out)
    assert 60 <= len(by_child) < len(ids)

    # The state both consumers apply to: keyed by message id, so applying twice changes nothing.
    state: dict[str, str] = {}
    deliveries: Counter[str] = Counter()

    def apply_once(message_id: str) -> None:
        deliveries[message_id] += 1
        state.setdefault(message_id, key_of[message_id])

    for message_id in by_child:
        apply_once(message_id)
    received: list[str] = []

    async def apply(delivery: Delivery) -> None:
        message_id = orjson.loads(delivery.value)["id"]
        received.append(message_id)
        apply_once(message_id)

    await bus.subscribe(TOPIC, "crash", apply)
    await eventually(lambda: len(state) == len(ids))
    assert state == key_of
    assert set(ids) - set(by_child) <= set(received)
    assert all(deliveries[i] >= 1 for i in ids)
    # Only messages whose ack the kill cut off may arrive twice; nothing arrives a third time.
    assert max(deliveries.values()) <= 2
    for key in set(key_of.values()):
        mine = [i for i in received if key_of[i] == key]
        assert mine == sorted(mine), f"redelivered out of order for {key}"


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    bootstrap_, prefix_, group_, out_ = sys.argv[2:6]
    asyncio.run(_child(bootstrap_, prefix_, group_, Path(out_)))
