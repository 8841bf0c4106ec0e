"""Transactional outbox: the store port and the relay that publishes its rows to the bus."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter, Gauge

from soma.bus.dispatch import backoff_s
from soma.bus.port import Bus, OutgoingMessage
from soma.config.settings import OutboxSettings
from soma.core.service import Health, HealthStatus
from soma.observability.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One row written in the same transaction as the state change it announces."""

    id: int
    topic: str
    key: str
    payload: bytes
    headers: dict[str, str]


class OutboxStore(Protocol):
    """Durable outbox rows; implemented by `soma.storage.outbox_store`."""

    async def fetch_pending(self, limit: int) -> list[OutboxRecord]:
        """Unsent rows, ordered by id."""
        ...

    async def mark_sent(self, ids: Sequence[int]) -> None: ...

    async def prune_sent(self, older_than_s: float) -> int: ...

    async def wait_for_new(self, timeout_s: float) -> None:
        """Return at once when rows were added, else after `timeout_s`."""
        ...

    async def pending_count(self) -> int: ...

    def leadership(self) -> AbstractAsyncContextManager[bool]:
        """True while this replica is the one relay."""
        ...


_PRUNE_EVERY_S = 60.0
_LEADER_TERM_S = 30.0
_GAUGE_EVERY_S = 1.0
_STOP_WAIT_S = 10.0
_FIRST_BACKOFF_S = 0.1


class OutboxRelay:
    """Publishes outbox rows in id order while this replica leads; a `Service` named `outbox`."""

    def __init__(
        self, store: OutboxStore, bus: Bus, settings: OutboxSettings, metrics: Metrics
    ) -> None:
        self._store = store
        self._bus = bus
        self._settings = settings
        self._pending = Gauge(
            "soma_outbox_pending",
            "Outbox rows not yet published to the bus (as last counted by the leader).",
            registry=metrics.registry,
        )
        self._relayed = Counter(
            "soma_outbox_relayed_total",
            "Outbox rows published to the bus.",
            registry=metrics.registry,
        )
        self._failures = Counter(
            "soma_outbox_publish_failures_total",
            "Batches the bus did not accept (kept and retried).",
            registry=metrics.registry,
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_batch = False
        self._leader = False
        self._failure: str | None = None
        self._failing_since = 0.0
        self._next_prune = 0.0
        self._next_gauge = 0.0

    @property
    def name(self) -> str:
        return "outbox"

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Finish the batch being published (bounded), then end the loop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if not self._in_batch:
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=_STOP_WAIT_S)
        if not done:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def figures(self) -> dict[str, float]:
        return {"outbox_pending": await self._store.pending_count()}

    async def health(self) -> Health:
        task = self._task
        if task is None:
            return Health(HealthStatus.STOPPED, "outbox relay not running")
        if task.done():
            error = None if task.cancelled() else task.exception()
            return Health.unhealthy(f"outbox relay loop ended: {error!r}")
        if self._failure is not None:
            since = time.monotonic() - self._failing_since
            return Health(HealthStatus.DEGRADED, f"{self._failure} (for {since:.0f} s)")
        return Health.healthy("leader" if self._leader else "standby")

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                async with self._store.leadership() as leader:
                    self._leader = leader
                    if leader:
                        await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Store errors (database down): rows stay put; try again after a pause.
                failures += 1
                self._fail(f"outbox store failing: {type(exc).__name__}: {exc}")
                log.warning("outbox: store error, retrying: %s", exc)
                await asyncio.sleep(self._backoff(failures))
                continue
            finally:
                self._leader = False
            failures = 0
            if not leader and not self._stopping:
                await asyncio.sleep(self._settings.poll_interval_s)

    async def _lead(self) -> None:
        store, settings = self._store, self._settings
        term_ends = time.monotonic() + _LEADER_TERM_S
        failures = 0
        while not self._stopping and time.monotonic() < term_ends:
            await self._housekeeping()
            records = await store.fetch_pending(settings.batch_size)
            if not records:
                self._pending.set(0)
                await store.wait_for_new(settings.poll_interval_s)
                continue
            messages = [OutgoingMessage(r.topic, r.key, r.payload, r.headers) for r in records]
            self._in_batch = True
            try:
                try:
                    await self._bus.publish_batch(messages)
                except Exception as exc:
                    failures += 1
                    self._failures.inc()
                    self._fail(f"bus publish failing: {type(exc).__name__}: {exc}")
                    log.warning("outbox: bus did not accept %d rows: %s", len(records), exc)
                else:
                    await store.mark_sent([r.id for r in records])
                    self._relayed.inc(len(records))
                    failures = 0
                    self._failure = None
            finally:
                self._in_batch = False
            if failures:
                await asyncio.sleep(self._backoff(failures))

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_gauge:
            self._next_gauge = now + _GAUGE_EVERY_S
            self._pending.set(await self._store.pending_count())
        if now >= self._next_prune:
            self._next_prune = now + _PRUNE_EVERY_S
            pruned = await self._store.prune_sent(self._settings.retention_s)
            if pruned:
                log.info("outbox: pruned %d sent rows", pruned)

    def _fail(self, detail: str) -> None:
        if self._failure is None:
            self._failing_since = time.monotonic()
        self._failure = detail

    def _backoff(self, failures: int) -> float:
        retry_max = self._settings.retry_max_s
        return backoff_s(failures, min(_FIRST_BACKOFF_S, retry_max), retry_max)
