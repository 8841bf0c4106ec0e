"""Events/s through outbox (SqlOutboxStore on SQLite) -> relay -> bus -> consumer, per backend.

    .venv/bin/python -m bench.bench_bus [--events 20000] [--backends local,kafka]

Kafka uses SOMA_TEST_KAFKA_BOOTSTRAP if set, else a throwaway tansu broker. Prints numbers only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from soma.bus.outbox import OutboxRelay
from soma.bus.port import Delivery, OutgoingMessage
from soma.bus.service import create_bus
from soma.bus.topics import CONVERSATION_INBOUND
from soma.config.settings import OutboxSettings, Settings
from soma.observability.metrics import Metrics
from soma.storage import Database, DatabaseService
from tests.harness.kafka import ENV_BOOTSTRAP, TansuBroker, make_bus_settings

TOPIC = CONVERSATION_INBOUND
KEYS = 64
ROWS_PER_TRANSACTION = 100


def bench_settings(backend: str, bootstrap: str | None) -> Settings:
    if backend not in ("local", "kafka"):
        raise SystemExit(f"unknown backend {backend!r}: local or kafka")
    settings = make_bus_settings("kafka" if backend == "kafka" else "local", bootstrap)
    settings.bus.concurrency = 64
    settings.bus.prefetch = 2000
    settings.bus.local_capacity = 10_000
    return settings


class Counter:
    def __init__(self, expected: int) -> None:
        self.count = 0
        self.expected = expected
        self.done = asyncio.Event()

    async def handle(self, delivery: Delivery) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


async def bus_only(settings: Settings, events: int) -> float:
    """publish_batch -> consumer, no outbox; events/s."""
    bus = create_bus(settings, Metrics())
    counter = Counter(events)
    await bus.subscribe(TOPIC, "bench", counter.handle)
    await bus.start()
    try:
        started = time.perf_counter()
        for chunk in range(0, events, 500):
            await bus.publish_batch(
                [
                    OutgoingMessage(TOPIC, f"s{i % KEYS}", b'{"n": %d}' % i)
                    for i in range(chunk, min(events, chunk + 500))
                ]
            )
        await asyncio.wait_for(counter.done.wait(), 300)
        return events / (time.perf_counter() - started)
    finally:
        await bus.stop()


async def outbox_to_consumer(settings: Settings, events: int, data_dir: Path) -> dict[str, float]:
    """SQLite outbox -> relay -> bus -> consumer: a pre-written backlog, then rows written live."""
    url = f"sqlite+aiosqlite:///{data_dir / 'bench.db'}"
    service = DatabaseService(Settings(database={"url": url}), Metrics())
    await service.start()
    database, store = service.database, service.outbox_store
    metrics = Metrics()
    bus = create_bus(settings, metrics)
    counter = Counter(events)
    await bus.subscribe(TOPIC, "bench", counter.handle)
    await bus.start()
    relay = OutboxRelay(store, bus, OutboxSettings(batch_size=500, poll_interval_s=1.0), metrics)
    try:
        started = time.perf_counter()
        await write_rows(database, 0, events)
        written = time.perf_counter() - started
        started = time.perf_counter()
        await relay.start()
        await asyncio.wait_for(counter.done.wait(), 600)
        drained = time.perf_counter() - started
        # Live: the relay runs while rows are committed, as in production.
        counter.expected, counter.done = 2 * events, asyncio.Event()
        started = time.perf_counter()
        await write_rows(database, events, 2 * events)
        await asyncio.wait_for(counter.done.wait(), 600)
        live = time.perf_counter() - started
        return {
            "write_per_s": events / written,
            "drain_per_s": events / drained,
            "live_per_s": events / live,
        }
    finally:
        await relay.stop()
        await bus.stop()
        await service.stop()


async def write_rows(database: Database, start: int, stop: int) -> None:
    for chunk in range(start, stop, ROWS_PER_TRANSACTION):
        async with database.transaction() as uow:
            for i in range(chunk, min(stop, chunk + ROWS_PER_TRANSACTION)):
                await uow.outbox.add(TOPIC, f"s{i % KEYS}", b'{"n": %d}' % i, {})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--backends", default="local,kafka")
    args = parser.parse_args()
    broker: TansuBroker | None = None
    bootstrap = os.environ.get(ENV_BOOTSTRAP)
    try:
        for backend in args.backends.split(","):
            if backend == "kafka" and bootstrap is None:
                broker = TansuBroker()
                bootstrap = broker.start()
            alone = await bus_only(bench_settings(backend, bootstrap), args.events)
            with tempfile.TemporaryDirectory(prefix="soma-bench-") as tmp:
                piped = await outbox_to_consumer(
                    bench_settings(backend, bootstrap), args.events, Path(tmp)
                )
            print(
                f"{backend:6s} events={args.events}: bus publish->consume {alone:,.0f}/s | "
                f"SQLite outbox: writes alone {piped['write_per_s']:,.0f}/s, "
                f"backlog relay->bus->consumer {piped['drain_per_s']:,.0f}/s, "
                f"live write->relay->bus->consumer {piped['live_per_s']:,.0f}/s"
            )
    finally:
        if broker is not None:
            broker.close()


if __name__ == "__main__":
    asyncio.run(main())
