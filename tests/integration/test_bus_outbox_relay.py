"""The outbox relay over both buses: rows written while the bus is down all arrive, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from soma.bus.outbox import OutboxRelay, OutboxStore
from soma.bus.port import Bus, Delivery
from soma.bus.service import create_bus
from soma.bus.topics import CONVERSATION_INBOUND
from soma.config.settings import OutboxSettings, Settings
from soma.core.service import HealthStatus
from soma.observability.metrics import Metrics
from soma.storage import Database, DatabaseService, SqlOutboxStore
from tests.harness.kafka import TansuBroker, make_bus_settings
from tests.unit.test_bus_outbox import MemoryOutboxStore

pytestmark = pytest.mark.integration

TOPIC = CONVERSATION_INBOUND


async def eventually(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


class Rig:
    """A bus (not started), a relay on `store`, and what a consumer group received."""

    def __init__(self, settings: Settings, store: OutboxStore, poll_interval_s: float) -> None:
        self.metrics = Metrics()
        self.bus: Bus = create_bus(settings, self.metrics)
        outbox = OutboxSettings(batch_size=50, poll_interval_s=poll_interval_s, retry_max_s=0.2)
        self.relay = OutboxRelay(store, self.bus, outbox, self.metrics)
        self.got: list[Delivery] = []

    async def consume(self, delivery: Delivery) -> None:
        self.got.append(delivery)

    def by_key(self) -> dict[str, list[int]]:
        keyed: dict[str, list[int]] = {}
        for delivery in self.got:
            keyed.setdefault(delivery.key, []).append(int(delivery.value))
        return keyed

    async def close(self) -> None:
        await self.relay.stop()
        await self.bus.stop()


@pytest.fixture
async def rigs() -> AsyncIterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        await rig.close()


async def test_rows_written_while_the_bus_is_down_arrive_in_key_order(
    bus_settings: Settings, rigs: list[Rig]
) -> None:
    store = MemoryOutboxStore()
    rig = Rig(bus_settings, store, poll_interval_s=0.2)
    rigs.append(rig)
    await rig.bus.subscribe(TOPIC, "worker", rig.consume)
    await rig.relay.start()
    for i in range(120):
        store.add(TOPIC, f"session-{i % 6}", b"%d" % i)
    failures = "soma_outbox_publish_failures_total"
    await eventually(lambda: (rig.metrics.registry.get_sample_value(failures) or 0) >= 1)
    assert await store.pending_count() == 120
    await rig.bus.start()
    await eventually(lambda: len(rig.got) >= 120)
    assert rig.by_key() == {f"session-{k}": list(range(k, 120, 6)) for k in range(6)}
    assert await store.pending_count() == 0


async def test_the_idle_relay_wakes_for_new_rows(bus_settings: Settings, rigs: list[Rig]) -> None:
    store = MemoryOutboxStore()
    rig = Rig(bus_settings, store, poll_interval_s=3600)
    rigs.append(rig)
    await rig.bus.start()
    await rig.bus.subscribe(TOPIC, "worker", rig.consume)
    await rig.relay.start()
    for i in range(3):
        await eventually(lambda: store.waiting)
        store.add(TOPIC, "session", b"%d" % i)
        await eventually(lambda n=i + 1: len(rig.got) == n)  # type: ignore[misc]
    assert [d.value for d in rig.got] == [b"0", b"1", b"2"]
    assert store.wait_timeouts == 0


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[tuple[Database, SqlOutboxStore]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}"
    service = DatabaseService(Settings(database={"url": url}), Metrics())
    await service.start()
    yield service.database, service.outbox_store
    await service.stop()


async def test_the_sql_outbox_store_on_sqlite_feeds_the_bus(
    bus_settings: Settings, rigs: list[Rig], sqlite_store: tuple[Database, SqlOutboxStore]
) -> None:
    database, store = sqlite_store
    rig = Rig(bus_settings, store, poll_interval_s=3600)
    rigs.append(rig)
    await rig.bus.subscribe(TOPIC, "worker", rig.consume)
    await rig.relay.start()
    async with database.transaction() as uow:
        for i in range(60):
            await uow.outbox.add(TOPIC, f"session-{i % 4}", b"%d" % i, {"traceparent": str(i)})
    await rig.bus.start()
    await eventually(lambda: len(rig.got) >= 60)
    # A commit while the relay idles (poll interval: an hour) wakes it at once.
    async with database.transaction() as uow:
        await uow.outbox.add(TOPIC, "session-0", b"60", {"traceparent": "60"})
    await eventually(lambda: len(rig.got) >= 61)
    expected = {f"session-{k}": list(range(k, 60, 4)) for k in range(4)}
    expected["session-0"].append(60)
    assert rig.by_key() == expected
    assert all(d.headers["traceparent"] == d.value.decode() for d in rig.got)
    assert await store.pending_count() == 0


async def test_rows_written_while_the_broker_is_stopped_arrive_after_it_returns(
    rigs: list[Rig],
) -> None:
    broker = TansuBroker()
    broker.start()
    try:
        settings = make_bus_settings("kafka", broker.bootstrap)
        kafka = settings.bus.kafka.model_copy(update={"request_timeout_ms": 1000})
        settings.bus.kafka = kafka
        store = MemoryOutboxStore()
        rig = Rig(settings, store, poll_interval_s=0.2)
        rigs.append(rig)
        await rig.bus.start()
        await rig.relay.start()
        broker.stop()
        for i in range(40):
            store.add(TOPIC, f"session-{i % 4}", b"%d" % i)
        failures = "soma_outbox_publish_failures_total"
        await eventually(lambda: (rig.metrics.registry.get_sample_value(failures) or 0) >= 1)
        degraded = await rig.relay.health()
        assert degraded.status == HealthStatus.DEGRADED
        assert "bus publish failing" in degraded.detail
        assert await store.pending_count() == 40
        # The broker comes back empty (memory storage): the bus recreates its topics.
        broker.start()
        await eventually(lambda: store.fetches > 0 and not store.rows_pending(), 60)
        reader = Rig(settings, MemoryOutboxStore(), poll_interval_s=0.2)
        rigs.append(reader)
        await reader.bus.subscribe(TOPIC, "worker", reader.consume)
        await reader.bus.start()
        await eventually(lambda: len({d.value for d in reader.got}) == 40)
        # A batch that timed out may still reach the broker, then go again: at-least-once.
        # What an idempotent consumer applies (first arrivals) is complete and in key order.
        applied = {key: list(dict.fromkeys(values)) for key, values in reader.by_key().items()}
        assert applied == {f"session-{k}": list(range(k, 40, 4)) for k in range(4)}
        assert (await rig.relay.health()).status == HealthStatus.HEALTHY
    finally:
        for rig in rigs:
            await rig.close()
        rigs.clear()
        broker.close()
