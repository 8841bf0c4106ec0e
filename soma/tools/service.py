"""The `tools` service: runs the tool calls of parked runs and resumes them (ARCHITECTURE §6).

It consumes `tool.requests` (one message per step, or per decided approval), settles every
call of the message concurrently, records the outcomes in one transaction, publishes their
events, and, when a step is complete, resumes the run through `tool.results`. A sweep asks
again for calls nobody is progressing, finds calls a crash interrupted, and expires approvals.
It publishes its catalog so that workers and the gateway, which run no tools, know the tools.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Protocol

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Tracer
from pydantic import ValidationError

from soma.bus.port import Bus, Delivery
from soma.bus.topics import TOOL_REQUESTS
from soma.config.settings import RuntimeSettings
from soma.core.clock import utcnow
from soma.core.events import Envelope
from soma.core.service import Health, HealthStatus
from soma.runs.journal import publish
from soma.runs.port import EventStreams
from soma.runs.tool_steps import decide, record
from soma.runs.tool_store import ToolStore
from soma.storage.database import Database
from soma.storage.repositories.tool_calls import ToolCall
from soma.tools.catalog import Catalog
from soma.tools.executor import Executor
from soma.tools.published import CATALOG_KEY, PublishedCatalog

_log = logging.getLogger("soma.tools")
GROUP = "tools"
SWEEP_EVERY_S = 5.0
SWEEP_PAGE = 500
PUBLISH_EVERY_S = 30.0


class Publisher(Protocol):
    """Where the catalog goes for other processes (the cache's KV)."""

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...


class ToolsService:
    def __init__(
        self,
        *,
        bus: Bus,
        database: Database,
        store: ToolStore,
        streams: EventStreams,
        kv: Publisher,
        catalog: Catalog,
        executor: Executor,
        isolation: str,
        runtime: RuntimeSettings,
        approval_timeout_s: float,
        tracer: Tracer,
        orphans_at_start: bool,
    ) -> None:
        self._bus = bus
        self._database = database
        self._store = store
        self._streams = streams
        self._kv = kv
        self._catalog = catalog
        self._executor = executor
        self._isolation = isolation
        self._runtime = runtime
        self._approval_timeout_s = approval_timeout_s
        self._tracer = tracer
        self._orphans_at_start = orphans_at_start
        self._tasks: list[asyncio.Task[None]] = []
        self._problem: str | None = None

    @property
    def name(self) -> str:
        return "tools"

    async def start(self) -> None:
        await self._catalog.start()
        await self._publish_catalog()
        await self._bus.subscribe(TOOL_REQUESTS, GROUP, self._handle)
        if self._orphans_at_start:
            # In-process bus: nothing survived the restart, so every unfinished call is ours.
            await self.sweep(everything=True)
        self._tasks = [
            asyncio.create_task(self._every(SWEEP_EVERY_S, self.sweep), name="tools-sweep"),
            asyncio.create_task(
                self._every(PUBLISH_EVERY_S, self._publish_catalog), name="tools-catalog"
            ),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._catalog.stop()

    async def health(self) -> Health:
        providers = await self._catalog.health()
        down = [f"{name}: {h.detail}" for name, h in providers.items() if h.status != "healthy"]
        if self._problem:
            down.append(self._problem)
        detail = f"isolation {self._isolation}, {len(self._catalog.specs())} tools"
        if down:
            return Health(HealthStatus.DEGRADED, detail + "; " + "; ".join(down))
        return Health.healthy(detail)

    async def _publish_catalog(self) -> None:
        published = PublishedCatalog(tuple(self._catalog.specs()), self._isolation)
        await self._kv.set(CATALOG_KEY, published.encode())

    async def _every(self, interval_s: float, work: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await work()
                self._problem = None
            except Exception as exc:  # retried next round; health says so meanwhile
                self._problem = f"{getattr(work, '__name__', 'task')} failing: {exc}"
                _log.warning("tools: %s", self._problem)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            envelope = Envelope.from_bytes(delivery.value)
        except (ValidationError, ValueError) as exc:
            raise ValueError(f"malformed tool request: {exc}") from exc
        ids = envelope.payload.get("calls")
        if envelope.run_id is None or not isinstance(ids, list):
            raise ValueError("tool request without run_id or calls")
        parent = propagate.extract(dict(delivery.headers))
        with self._tracer.start_as_current_span(
            "tool step", context=parent, kind=SpanKind.CONSUMER
        ):
            await self.settle(envelope.tenant_id, envelope.run_id, [str(i) for i in ids])

    async def settle(
        self, tenant_id: str, run_id: str, call_ids: Sequence[str], orphans: bool = False
    ) -> None:
        """Settle the calls (concurrently), record them, publish, and maybe resume the run.

        `orphans`: nothing else can be running them (the in-process bus restarted with us).
        """
        loaded = await self._store.load(tenant_id, run_id, call_ids)
        if loaded is None or loaded.run.finished_at is not None:
            return  # cancelled or failed meanwhile: nothing left to run for it
        run, agent = loaded.run, loaded.agent
        settled = await asyncio.gather(
            *(self._executor.settle(run, agent, c, orphan=orphans) for c in loaded.calls)
        )
        outcomes = [s for s in settled if s is not None]
        if not outcomes:
            return
        events, _ = await record(self._store, run, outcomes, self._runtime.requeue_after_s)
        await publish(self._streams, run_id, events)

    async def sweep(self, everything: bool = False) -> int:
        """Ask again for calls nobody progresses; expire approvals. Returns calls acted on."""
        now = utcnow()
        stale = now - timedelta(seconds=self._runtime.requeue_after_s)
        interrupted = self._executor.interrupted_before(now)
        expired = now - timedelta(seconds=self._approval_timeout_s)
        async with self._database.read() as uow:
            calls = await uow.tool_calls.list_unfinished(limit=SWEEP_PAGE)
        again: dict[tuple[str, str], list[ToolCall]] = {}
        for call in calls:
            if call.status == "awaiting_approval":
                if call.created_at < expired and call.approval_id is not None:
                    await self._expire(call)
                continue
            started = call.started_at or call.created_at
            due = everything or (
                started < interrupted if call.status == "running" else started < stale
            )
            if due:
                again.setdefault((call.tenant_id, call.run_id), []).append(call)
        for (tenant_id, run_id), stuck in again.items():
            await self.settle(tenant_id, run_id, [c.id for c in stuck], orphans=everything)
        return sum(len(v) for v in again.values())

    async def _expire(self, call: ToolCall) -> None:
        assert call.approval_id is not None
        async with self._database.transaction() as uow:
            await decide(
                uow,
                call.tenant_id,
                call.approval_id,
                approve=False,
                actor="the approval timeout",
                reason=f"not decided within {self._approval_timeout_s:g}s",
            )
