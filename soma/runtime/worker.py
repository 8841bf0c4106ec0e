"""The `conversation` service: consumes run requests and executes them as turns."""

from __future__ import annotations

import asyncio
import logging
import time

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Tracer
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from soma.bus.port import Bus, Delivery
from soma.bus.topics import CONVERSATION_INBOUND, TOOL_RESULTS
from soma.core.errors import UnavailableError
from soma.core.events import Envelope
from soma.core.service import Health
from soma.observability.logging import run_id_var, session_id_var, tenant_id_var
from soma.observability.metrics import LATENCY_BUCKETS, Metrics
from soma.runtime.turn import Turn, TurnDeps

_log = logging.getLogger("soma.runtime")
GROUP = "conversation"
RESUME_GROUP = "conversation-resume"
UNAVAILABLE_FIRST_S = 0.2
UNAVAILABLE_MAX_S = 5.0


class ConversationWorker:
    """Runs of one session arrive in order on one bus key, so they execute one at a time;
    the bus runs different keys concurrently, bounded here by `runtime.max_concurrent_runs`."""

    def __init__(self, bus: Bus, deps: TurnDeps, metrics: Metrics, tracer: Tracer) -> None:
        self._bus = bus
        self._tracer = tracer
        self._deps = deps
        self._slots = asyncio.Semaphore(deps.runtime.max_concurrent_runs)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._running: set[str] = set()
        self._draining = False
        self._started = False
        self._runs = Counter(
            "soma_runs_total",
            "Run attempts by outcome (completed, failed, cancelled, skipped, handed_back...).",
            ["outcome"],
            registry=metrics.registry,
        )
        self._duration = Histogram(
            "soma_run_duration_seconds",
            "Time from claiming a run to its outcome.",
            buckets=LATENCY_BUCKETS,
            registry=metrics.registry,
        )
        self._active = Gauge(
            "soma_runs_in_flight", "Runs executing in this worker.", registry=metrics.registry
        )

    @property
    def name(self) -> str:
        return "conversation"

    async def start(self) -> None:
        self._deps.inflight.start()
        await self._bus.subscribe(CONVERSATION_INBOUND, GROUP, self._handle)
        # A step's last tool result resumes its run: the same request, by another door.
        await self._bus.subscribe(TOOL_RESULTS, RESUME_GROUP, self._handle)
        self._started = True

    async def drain(self) -> None:
        """Take nothing new; give in-flight turns `drain_timeout_s`, then hand the rest back."""
        self._draining = True
        try:
            if self._in_flight:
                await asyncio.wait(set(self._in_flight), timeout=self._deps.runtime.drain_timeout_s)
        finally:
            await self._hand_back_all()

    async def stop(self) -> None:
        self._draining = True
        await self._hand_back_all()
        await self._deps.inflight.stop()
        self._started = False

    async def figures(self) -> dict[str, float]:
        return {"runs_in_flight": len(self._in_flight)}

    async def health(self) -> Health:
        if not self._started:
            return Health.unhealthy("not consuming")
        return Health.healthy(f"{len(self._in_flight)} runs in flight")

    async def _hand_back_all(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _handle(self, delivery: Delivery) -> None:
        if self._draining:
            # Neither ack nor fail: the bus stops soon and the request is redelivered later.
            await asyncio.Event().wait()
        try:
            envelope = Envelope.from_bytes(delivery.value)
        except (ValidationError, ValueError) as exc:
            raise ValueError(f"malformed run request: {exc}") from exc
        if envelope.run_id is None:
            raise ValueError("run request without run_id")
        run_id = envelope.run_id
        if run_id in self._running:
            # A duplicate request (re-sent or redelivered on another partition) while this
            # worker executes the run: the execution in progress answers it.
            return
        self._running.add(run_id)
        try:
            async with self._slots:
                task = asyncio.create_task(self._execute(envelope, delivery))
                self._in_flight.add(task)
                try:
                    # Shielded: cancelling the handler (bus stopping) must go through hand-back.
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    raise
                finally:
                    self._in_flight.discard(task)
        finally:
            self._running.discard(run_id)

    async def _until_served(self, turn: Turn) -> None:
        """Run the turn; while the database is down, wait and try again rather than fail the
        delivery (failed deliveries end in the dead-letter topic; an outage is no poison)."""
        delay = UNAVAILABLE_FIRST_S
        while True:
            try:
                await turn.execute()
                return
            except UnavailableError as exc:
                if self._draining:
                    raise
                _log.warning("run %s waits for the database: %s", turn.run_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, UNAVAILABLE_MAX_S)

    async def _execute(self, envelope: Envelope, delivery: Delivery) -> None:
        assert envelope.run_id is not None
        tenant_id_var.set(envelope.tenant_id)
        session_id_var.set(envelope.session_id)
        run_id_var.set(envelope.run_id)
        turn = Turn(self._deps, envelope.tenant_id, envelope.run_id)
        started = time.perf_counter()
        self._active.inc()
        # The request's traceparent rode through the outbox and the bus: one trace end to end.
        parent = propagate.extract(dict(delivery.headers))
        try:
            with self._tracer.start_as_current_span(
                "run", context=parent, kind=SpanKind.CONSUMER
            ) as span:
                span.set_attribute("soma.run_id", envelope.run_id)
                await self._until_served(turn)
                span.set_attribute("soma.run.outcome", turn.outcome)
        finally:
            self._active.dec()
            self._runs.labels(turn.outcome).inc()
            if turn.outcome != "skipped":
                self._duration.observe(time.perf_counter() - started)
