"""The memory pipeline (service `memory_pipeline`): after each completed run, keep what is
worth keeping. It consumes `conversation.outbound`, never the request path; a redelivered
completion stores nothing twice (the run is recorded as handled in the same transaction)."""

from __future__ import annotations

import logging
from datetime import datetime

from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from soma.bus.port import Bus, Delivery
from soma.bus.topics import CONVERSATION_OUTBOUND
from soma.core.clock import utcnow
from soma.core.events import Envelope
from soma.core.service import Health
from soma.memory.extract import Extractor
from soma.memory.model import NewMemory, Scope
from soma.memory.service import UnifiedMemoryService
from soma.observability.metrics import Metrics
from soma.policy.port import PolicyEngine, PolicyInput, Subject
from soma.storage.database import Database

_log = logging.getLogger("soma.memory")
GROUP = "memory"
KNOWN = 10
"""Related memories of the scope an extractor sees (and may say a new fact replaces)."""


class PipelineMetrics:
    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.lag = Histogram(
            "soma_memory_pipeline_lag_seconds",
            "From a run's completion to its memories being stored",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.runs = Counter(
            "soma_memory_pipeline_runs_total",
            "Completed runs the pipeline handled, by what became of them",
            ["result"],
            registry=registry,
        )


class MemoryPipeline:
    def __init__(
        self,
        bus: Bus,
        database: Database,
        memory: UnifiedMemoryService,
        extractor: Extractor,
        policy: PolicyEngine,
        metrics: Metrics,
    ) -> None:
        self._bus = bus
        self._database = database
        self._memory = memory
        self._extractor = extractor
        self._policy = policy
        self._metrics = PipelineMetrics(metrics)

    @property
    def name(self) -> str:
        return "memory_pipeline"

    async def start(self) -> None:
        await self._bus.subscribe(CONVERSATION_OUTBOUND, GROUP, self.handle)

    async def stop(self) -> None:
        return None

    async def health(self) -> Health:
        return await self._memory.health()

    async def handle(self, delivery: Delivery) -> None:
        try:
            envelope = Envelope.from_bytes(delivery.value)
        except (ValidationError, ValueError) as exc:
            raise ValueError(f"malformed outbound event: {exc}") from exc
        if envelope.type != "message.completed" or envelope.run_id is None:
            return
        result = await self.ingest(envelope)
        self._metrics.runs.labels(result).inc()
        if result == "stored":
            completed = datetime.fromisoformat(envelope.ts)
            self._metrics.lag.observe(max((utcnow() - completed).total_seconds(), 0.0))

    async def ingest(self, envelope: Envelope) -> str:
        """Store what the run's turn left; returns what became of it (a metric label)."""
        tenant_id, run_id = envelope.tenant_id, envelope.run_id
        assert run_id is not None
        async with self._database.read() as uow:
            run = await uow.runs.get(tenant_id, run_id)
            agent = None if run is None else await uow.agents.get(tenant_id, run.agent_id)
            if run is None or agent is None or not agent.memory or run.message_id is None:
                return "skipped"
            session = await uow.sessions.get(tenant_id, run.session_id)
            question = await uow.messages.get(tenant_id, run.message_id)
        if session is None or question is None:
            return "skipped"
        if await self._memory.ingested(run_id):
            return "duplicate"
        decision = await self._policy.decide(
            PolicyInput(
                action="memory.write",
                tenant=tenant_id,
                subject=Subject(f"agent:{agent.id}", ("chat",)),
                resource={"tenant_id": tenant_id, "agent_id": agent.id, "user": session.user},
                context={"source": "run", "run_id": run_id},
            )
        )
        if not decision.allow:
            _log.info("run %s: policy denied memory.write: %s", run_id, decision.reason)
            return "denied"
        message = envelope.payload.get("message")
        answer = str(message.get("content", "")) if isinstance(message, dict) else ""
        scope = Scope(tenant_id, agent.id, session.user)
        related = await self._memory.recall(scope, question.content, KNOWN)
        # Only memories of exactly this scope may be replaced (not the agent's shared ones).
        known = [r.memory for r in related if r.memory.user == scope.user]
        facts = await self._extractor.extract(question.content, answer, known)
        limit = self._memory.settings.max_content_chars
        items = [
            NewMemory(
                scope,
                fact.content[:limit],
                fact.kind,
                source="run",
                source_id=run_id,
                replaces=fact.replaces,
            )
            for fact in facts
        ]
        stored = await self._memory.remember_run(tenant_id, run_id, items)
        return "duplicate" if stored is None else "stored"
