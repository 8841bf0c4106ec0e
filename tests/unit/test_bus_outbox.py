"""OutboxRelay against an in-memory OutboxStore (a test double of the port) and the local bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from soma.bus.local import LocalBus
from soma.bus.outbox import OutboxRecord, OutboxRelay
from soma.bus.port import Delivery, OutgoingMessage
from soma.config.settings import BusSettings, OutboxSettings
from soma.core.service import HealthStatus
from soma.observability.metrics import Metrics

TOPIC = "conversation.inbound"


@dataclass
class _Row:
    record: OutboxRecord
    sent_at: float | None = None


class MemoryOutboxStore:
    """Outbox rows in a dict; counts how `wait_for_new` returned."""

    def __init__(self) -> None:
        self.rows: dict[int, _Row] = {}
        self.leader = True
        self.wakeups = 0
        self.wait_timeouts = 0
        self.pruned_calls: list[float] = []
        self.fetches = 0
        self.terms = 0
        self.waiting = False
        self._next_id = 1
        self._added = asyncio.Event()

    def add(self, topic: str, key: str, payload: bytes, headers: Mapping[str, str] = {}) -> int:
        row_id, self._next_id = self._next_id, self._next_id + 1
        self.rows[row_id] = _Row(OutboxRecord(row_id, topic, key, payload, dict(headers)))
        self._added.set()
        return row_id

    async def fetch_pending(self, limit: int) -> list[OutboxRecord]:
        self.fetches += 1
        self._added.clear()
        pending = [r.record for _, r in sorted(self.rows.items()) if r.sent_at is None]
        return pending[:limit]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        for row_id in ids:
            self.rows[row_id].sent_at = time.monotonic()

    async def prune_sent(self, older_than_s: float) -> int:
        self.pruned_calls.append(older_than_s)
        cutoff = time.monotonic() - older_than_s
        old = [i for i, r in self.rows.items() if r.sent_at is not None and r.sent_at <= cutoff]
        for row_id in old:
            del self.rows[row_id]
        return len(old)

    async def wait_for_new(self, timeout_s: float) -> None:
        self.waiting = True
        try:
            async with asyncio.timeout(timeout_s):
                await self._added.wait()
            self.wakeups += 1
        except TimeoutError:
            self.wait_timeouts += 1
        finally:
            self.waiting = False

    async def pending_count(self) -> int:
        return self.rows_pending()

    def rows_pending(self) -> int:
        return sum(1 for r in self.rows.values() if r.sent_at is None)

    @asynccontextmanager
    async def _leadership(self) -> AsyncIterator[bool]:
        self.terms += 1
        yield self.leader

    def leadership(self) -> AbstractAsyncContextManager[bool]:
        return self._leadership()


async def eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


def fast_outbox(**changes: float) -> OutboxSettings:
    return OutboxSettings(
        batch_size=int(changes.pop("batch_size", 7)),
        poll_interval_s=changes.pop("poll_interval_s", 60.0),
        retry_max_s=changes.pop("retry_max_s", 0.05),
        retention_s=changes.pop("retention_s", 0.0),
    )


async def collect(bus: LocalBus, into: list[Delivery]) -> None:
    async def handler(delivery: Delivery) -> None:
        into.append(delivery)

    await bus.subscribe(TOPIC, "g", handler)


async def test_rows_written_while_the_bus_is_down_go_out_in_order_once_it_is_back() -> None:
    store, metrics = MemoryOutboxStore(), Metrics()
    bus = LocalBus(BusSettings(), metrics)
    got: list[Delivery] = []
    await collect(bus, got)
    relay = OutboxRelay(store, bus, fast_outbox(), metrics)
    await relay.start()
    for i in range(30):
        store.add(TOPIC, f"s{i % 4}", b"%d" % i, {"n": str(i)})
    await eventually(lambda: relay_failures(metrics) >= 2)
    health = await relay.health()
    assert health.status == HealthStatus.DEGRADED
    assert "bus publish failing" in health.detail and "not running" in health.detail
    assert all(r.sent_at is None for r in store.rows.values())
    await bus.start()
    await eventually(lambda: len(got) == 30)
    for key in ("s0", "s1", "s2", "s3"):
        values = [int(d.value) for d in got if d.key == key]
        assert values == sorted(values) and len(values) >= 7
    assert [d.headers["n"] for d in got if d.key == "s0"] == [str(i) for i in range(0, 30, 4)]
    await eventually(lambda: store.pruned_calls != [])
    assert (await relay.health()).status == HealthStatus.HEALTHY
    await relay.stop()
    await bus.stop()
    assert (await relay.health()).status == HealthStatus.STOPPED


def relay_failures(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("soma_outbox_publish_failures_total") or 0.0


async def test_new_rows_wake_the_idle_relay_instead_of_waiting_for_the_poll() -> None:
    store, metrics = MemoryOutboxStore(), Metrics()
    bus = LocalBus(BusSettings(), metrics)
    await bus.start()
    got: list[Delivery] = []
    await collect(bus, got)
    relay = OutboxRelay(store, bus, fast_outbox(poll_interval_s=3600), metrics)
    await relay.start()
    for round_ in range(3):
        await eventually(lambda: store.waiting)
        store.add(TOPIC, "s", b"%d" % round_)
        await eventually(lambda n=round_ + 1: len(got) == n)  # type: ignore[misc]
    assert store.wakeups == 3
    assert store.wait_timeouts == 0
    value_of = metrics.registry.get_sample_value
    assert value_of("soma_outbox_relayed_total") == 3
    await eventually(lambda: value_of("soma_outbox_pending") == 0)
    await relay.stop()
    await bus.stop()


async def test_a_replica_that_is_not_the_leader_publishes_nothing() -> None:
    store, metrics = MemoryOutboxStore(), Metrics()
    store.leader = False
    bus = LocalBus(BusSettings(), metrics)
    await bus.start()
    got: list[Delivery] = []
    await collect(bus, got)
    relay = OutboxRelay(store, bus, fast_outbox(poll_interval_s=0.01), metrics)
    await relay.start()
    store.add(TOPIC, "s", b"x")
    await eventually(lambda: store.terms >= 3)
    assert (await relay.health()).detail == "standby"
    assert store.fetches == 0
    assert got == []
    store.leader = True
    await eventually(lambda: len(got) == 1)
    await relay.stop()
    await bus.stop()


class GatedBus(LocalBus):
    """A local bus whose batch publishing waits for the test to open a gate."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(BusSettings(), metrics)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def publish_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().publish_batch(messages)


async def test_stop_finishes_the_batch_being_published() -> None:
    store, metrics = MemoryOutboxStore(), Metrics()
    bus = GatedBus(metrics)
    await bus.start()
    for i in range(3):
        store.add(TOPIC, "s", b"%d" % i)
    relay = OutboxRelay(store, bus, fast_outbox(), metrics)
    await relay.start()
    await bus.entered.wait()
    stopping = asyncio.create_task(relay.stop())
    await asyncio.sleep(0)
    assert not stopping.done()
    bus.gate.set()
    await asyncio.wait_for(stopping, 10)
    assert all(r.sent_at is not None for r in store.rows.values())
    await bus.stop()
