"""The `recovery` service: re-drives runs whose worker died or whose request never arrived."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from prometheus_client import Counter

from soma.config.settings import RuntimeSettings
from soma.core.clock import utcnow
from soma.core.service import Health
from soma.observability.metrics import Metrics
from soma.runs.commands import finish_run, request_run
from soma.runs.events import ACTIVE, EventType, RunStatus
from soma.runs.journal import RunJournal
from soma.runs.port import EventStreams
from soma.runs.store import RunStore
from soma.storage.database import Database
from soma.storage.repositories.runs import Run

_log = logging.getLogger("soma.recovery")
DRIVEN = ACTIVE - {RunStatus.AWAITING_TOOLS, RunStatus.AWAITING_APPROVAL}
"""Runs a worker drives; a run waiting for tools is the tools service's to re-drive."""
PAGE = 200


class RecoveryService:
    """Sweeps every `recovery_interval_s`; each stalled run is fixed in its own transaction.

    With `orphans_at_start` (in-process bus: nothing survives a restart) the first sweep
    treats every active run as abandoned, since no other process could be running it.
    """

    def __init__(
        self,
        database: Database,
        store: RunStore,
        streams: EventStreams,
        settings: RuntimeSettings,
        metrics: Metrics,
        orphans_at_start: bool,
    ) -> None:
        self._database = database
        self._store = store
        self._streams = streams
        self._settings = settings
        self._orphans_at_start = orphans_at_start
        self._task: asyncio.Task[None] | None = None
        self._last_error: str | None = None
        self._recovered = Counter(
            "soma_runs_recovered_total",
            "Runs the recovery service acted on, by action (requeued, failed, cancelled).",
            ["action"],
            registry=metrics.registry,
        )

    @property
    def name(self) -> str:
        return "recovery"

    async def start(self) -> None:
        if self._orphans_at_start:
            await self.sweep(orphans=True)
        self._task = asyncio.create_task(self._loop(), name="recovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def health(self) -> Health:
        if self._task is None or self._task.done():
            return Health.unhealthy("not sweeping")
        if self._last_error:
            return Health.unhealthy(f"last sweep failed: {self._last_error}")
        return Health.healthy()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.recovery_interval_s)
            try:
                await self.sweep()
                self._last_error = None
            except Exception as exc:
                self._last_error = " ".join(str(exc).split())[:300] or type(exc).__name__
                _log.error("recovery sweep failed: %s", self._last_error)

    async def sweep(self, orphans: bool = False) -> int:
        """Fix every stalled run (every active run when `orphans`); returns how many."""
        fixed = 0
        for tenant_id in await self._tenant_ids():
            for run in await self._stalled(tenant_id, orphans):
                fixed += await self._recover(run)
        return fixed

    async def _tenant_ids(self) -> list[str]:
        ids: list[str] = []
        cursor: str | None = None
        while True:
            async with self._database.read() as uow:
                page = await uow.tenants.list(PAGE, cursor)
            ids.extend(t.id for t in page.items)
            if page.next_cursor is None:
                return ids
            cursor = page.next_cursor

    async def _stalled(self, tenant_id: str, orphans: bool) -> list[Run]:
        now = utcnow()
        async with self._database.read() as uow:
            if not orphans:
                return await uow.runs.list_stalled(
                    tenant_id,
                    now=now,
                    queued_before=now - timedelta(seconds=self._settings.requeue_after_s),
                    limit=PAGE,
                )
            found: list[Run] = []
            cursor: str | None = None
            while True:
                page = await uow.runs.list(tenant_id, PAGE, cursor, statuses=DRIVEN)
                found.extend(page.items)
                if page.next_cursor is None:
                    return found
                cursor = page.next_cursor

    async def _recover(self, run: Run) -> int:
        # The next attempt's ids are free: whoever ran the last attempt is gone.
        journal = RunJournal(self._streams, run.id, run.attempt + 1)
        action: str | None
        if run.status == RunStatus.CANCELLING:
            event = journal.event(EventType.CANCELLED, {"reason": "cancelled"})
            expected = (RunStatus.CANCELLING,)
            done = await finish_run(self._store, journal, run, RunStatus.CANCELLED, expected, event)
            action = "cancelled" if done else None
        elif run.status == RunStatus.RUNNING and run.retries + 1 >= self._settings.max_attempts:
            error = f"gave up after {run.retries + 1} attempts: the worker lease expired"
            event = journal.event(EventType.FAILED, {"error": error})
            expected = (RunStatus.RUNNING,)
            done = await finish_run(
                self._store, journal, run, RunStatus.FAILED, expected, event, error
            )
            action = "failed" if done else None
        else:
            next_check = utcnow() + timedelta(seconds=self._settings.requeue_after_s)
            async with self._database.transaction() as uow:
                requeued = await uow.runs.requeue(
                    run.tenant_id,
                    run.id,
                    expected=(run.status,),
                    expected_attempt=run.attempt,
                    next_check_at=next_check,
                )
                if requeued:
                    await request_run(uow, run)
            action = "requeued" if requeued else None
        if action is None:
            return 0
        self._recovered.labels(action).inc()
        _log.info("recovery %s run %s (attempt %d)", action, run.id, run.attempt)
        return 1
