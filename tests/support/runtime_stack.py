"""The runtime's real services composed in process, as `orchestrator.manifest` composes them.

async with running_stack(runtime_settings(tmp_path, url, upstream.base_url)) as stack:
    chat = await stack.conversation()
    accepted = await stack.accept(chat, "hello")
    run = await stack.wait_run(chat, accepted.run.id, {"completed"})

Nothing is mocked: SQLite or PostgreSQL, the in-process bus and cache, the LLM service
pointed at a `ScriptedLLM`, the outbox relay, the conversation worker and recovery.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry import trace
from sqlalchemy import select, update

from soma.bus.outbox import OutboxRelay
from soma.bus.port import Bus
from soma.bus.service import create_bus
from soma.bus.topics import CONVERSATION_INBOUND
from soma.cache.service import CacheService, create_cache
from soma.config import Settings
from soma.core.events import Envelope
from soma.core.ids import worker_id
from soma.core.service import Service
from soma.limits.governor import Limits
from soma.limits.source import StoredOverrides
from soma.llm.service import LLMService
from soma.memory.extract import Extractor, LLMExtractor, VerbatimExtractor
from soma.memory.pipeline import MemoryPipeline
from soma.memory.service import UnifiedMemoryService
from soma.observability.metrics import Metrics
from soma.policy.service import PolicyService, create_policy
from soma.runs.commands import Accepted, accept, acceptance
from soma.runs.journal import publish
from soma.runs.store import RunStore
from soma.runtime.inflight import InFlight
from soma.runtime.recall import Recaller
from soma.runtime.recovery import RecoveryService
from soma.runtime.turn import TurnDeps
from soma.runtime.worker import ConversationWorker
from soma.storage import DatabaseService
from soma.storage.database import Database
from soma.storage.repositories.agents import Agent, AgentSettings
from soma.storage.repositories.messages import Message
from soma.storage.repositories.run_events import RunEvent
from soma.storage.repositories.runs import Run
from soma.storage.repositories.sessions import Session
from soma.storage.tables import outbox, runs
from soma.tools.published import CatalogReader
from soma.uploads.attach import AttachmentReader
from soma.uploads.files import UploadFiles

T = TypeVar("T")
WAIT_S = 20.0
POLL_S = 0.02
SCRIPTED = "scripted"
LOST_TOPIC = "lost.requests"


def runtime_settings(
    tmp_path: Path,
    database_url: str,
    upstream_url: str,
    *,
    runtime: Mapping[str, Any] | None = None,
    models: Mapping[str, Mapping[str, Any]] | None = None,
    retries: int = 2,
    llm: Mapping[str, Any] | None = None,
    memory: Mapping[str, Any] | None = None,
) -> Settings:
    """Small, fast settings; the default model `scripted` talks to the scripted upstream."""
    declared: dict[str, Any] = {
        SCRIPTED: {"provider": "openai", "base_url": upstream_url, "model": SCRIPTED}
    }
    declared.update({name: dict(model) for name, model in (models or {}).items()})
    return Settings(
        data_dir=tmp_path / "data",
        database={"url": database_url, "pool_size": 5},
        bus={"retry_backoff_s": 0.05, "retry_backoff_max_s": 0.5},
        outbox={"poll_interval_s": 0.2},
        cache={"url": "memory://"},
        llm={"default_model": SCRIPTED, "models": declared, "retries": retries, **(llm or {})},
        runtime={
            "lease_s": 2.0,
            "recovery_interval_s": 600.0,
            "requeue_after_s": 600.0,
            "drain_timeout_s": 0.0,
            **(runtime or {}),
        },
        memory=dict(memory or {}),
    )


@dataclass(frozen=True)
class Chat:
    """A tenant, one of its agents and a session with it."""

    tenant_id: str
    agent: Agent
    session: Session

    @property
    def session_id(self) -> str:
        return self.session.id


class RuntimeStack:
    """The services, unstarted until `running_stack` (or `start`) starts them in order."""

    def __init__(
        self, settings: Settings, *, orphans_at_start: bool = False, memory: bool = False
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.database_service = DatabaseService(settings, self.metrics)
        self.memory: list[Service] = []
        self.policy: PolicyService | None = None
        recaller = None
        if memory:
            # Long-term memory as the manifest wires it: the service, recall, the pipeline.
            self.policy = policy = create_policy(settings, self.metrics)
            self.memory_service = UnifiedMemoryService(settings.memory, self.database, self.metrics)
            recaller = Recaller(self.memory_service, policy, settings.memory)
            self.memory = [policy, self.memory_service]
        self.cache: CacheService = create_cache(settings, self.metrics)
        self.bus: Bus = create_bus(settings, self.metrics)
        self.llm = LLMService(settings, self.metrics)
        self.relay = OutboxRelay(
            self.database_service.outbox_store, self.bus, settings.outbox, self.metrics
        )
        self.owner = worker_id()
        self.limits = Limits(
            settings.limits, self.cache.quotas, StoredOverrides(self.database_service.database)
        )
        self.deps = TurnDeps(
            database=self.database,
            store=self.run_store,
            tool_store=self.database_service.tool_store,
            streams=self.cache.streams,
            models=self.llm,
            tools=CatalogReader(self.cache.kv),
            inflight=InFlight(self.run_store, self.cache.kv, self.owner, settings.runtime.lease_s),
            runtime=settings.runtime,
            llm=settings.llm,
            owner=self.owner,
            recaller=recaller,
            tokens=self.limits,
            attachments=AttachmentReader(
                self.database_service.database,
                UploadFiles(settings.data_dir / "uploads"),
                settings.uploads.attachment_tokens,
            ),
        )
        if memory:
            extractor: Extractor = VerbatimExtractor()
            if settings.memory.extraction == "llm":
                extractor = LLMExtractor(self.llm, settings.memory.extraction_model)
            self.pipeline = MemoryPipeline(
                self.bus, self.database, self.memory_service, extractor, policy, self.metrics
            )
            self.memory.append(self.pipeline)
        self.worker = ConversationWorker(
            self.bus, self.deps, self.metrics, trace.get_tracer("soma.runtime")
        )
        self.recovery = RecoveryService(
            self.database,
            self.run_store,
            self.cache.streams,
            settings.runtime,
            self.metrics,
            orphans_at_start=orphans_at_start,
        )
        self._started: list[Service] = []

    @property
    def database(self) -> Database:
        return self.database_service.database

    @property
    def run_store(self) -> RunStore:
        return self.database_service.run_store

    def core(self) -> list[Service]:
        """Manifest order for what every test needs; recovery is started by the tests using it."""
        return [self.database_service, self.cache, self.bus, self.llm, *self.memory, self.relay,
                self.worker]  # fmt: skip

    async def start(self, *services: Service) -> None:
        for service in services:
            await service.start()
            self._started.append(service)

    async def stop(self) -> None:
        while self._started:
            await self._started.pop().stop()

    # -- writing, as the gateway does ------------------------------------------------------

    async def conversation(
        self,
        agent_name: str = "helper",
        model: str = SCRIPTED,
        *,
        memory: bool = False,
        user: str | None = None,
        **settings: Any,
    ) -> Chat:
        async with self.database.transaction() as uow:
            tenant = await uow.tenants.get_by_name("acme") or await uow.tenants.create("acme")
            agent = await uow.agents.get_by_name(tenant.id, agent_name)
            if agent is None:
                agent = await uow.agents.create(
                    tenant.id,
                    name=agent_name,
                    instructions="Answer briefly.",
                    model=model,
                    memory=memory,
                    settings=AgentSettings(**settings),
                )
            session = await uow.sessions.create(tenant.id, agent_id=agent.id, user=user)
        return Chat(tenant.id, agent, session)

    async def accept(self, chat: Chat, content: str, *, lose_request: bool = False) -> Accepted:
        """Accept a message like `POST /v1/sessions/{id}/messages`.

        `lose_request`: the run's request is written but goes where no worker listens, as if
        the bus had lost it.
        """
        written = acceptance(chat.session, chat.agent, content)
        if lose_request:
            # Relayed to a topic nobody consumes: as good as lost by the bus.
            written = replace(written, request=replace(written.request, topic=LOST_TOPIC))
        accepted = await accept(self.run_store, written)
        await publish(self.cache.streams, accepted.run.id, accepted.events)
        return accepted

    async def request_payload(self, run_id: str) -> bytes:
        """The first run request written for `run_id` (sent or not, lost or not)."""
        query = (
            select(outbox.c.payload)
            .where(outbox.c.topic.in_([CONVERSATION_INBOUND, LOST_TOPIC]))
            .order_by(outbox.c.id)
        )
        async with self.database.read() as uow:
            payloads = [bytes(p) for p in (await uow.connection.execute(query)).scalars()]
        for payload in payloads:
            if Envelope.from_bytes(payload).run_id == run_id:
                return payload
        raise AssertionError(f"no request for run {run_id} in the outbox")

    async def deliver(self, chat: Chat, run_id: str, key: str | None = None) -> None:
        """Publish the run's original request on the bus again (a redelivery)."""
        payload = await self.request_payload(run_id)
        await self.bus.publish(CONVERSATION_INBOUND, key or chat.session_id, payload)

    async def update_run(self, run_id: str, **values: Any) -> None:
        """Change the run row behind the runtime's back (a dead worker, a stolen lease)."""
        async with self.database.transaction() as uow:
            result = await uow.connection.execute(
                update(runs).where(runs.c.id == run_id).values(**values)
            )
        assert result.rowcount == 1

    # -- reading ---------------------------------------------------------------------------

    async def run(self, chat: Chat, run_id: str) -> Run:
        async with self.database.read() as uow:
            run = await uow.runs.get(chat.tenant_id, run_id)
        assert run is not None, f"run {run_id} not found"
        return run

    async def events(self, chat: Chat, run_id: str) -> list[RunEvent]:
        async with self.database.read() as uow:
            return await uow.run_events.list(chat.tenant_id, run_id)

    async def messages(self, chat: Chat) -> list[Message]:
        async with self.database.read() as uow:
            return (await uow.messages.list(chat.tenant_id, chat.session_id, 200)).items

    def runs_counted(self, outcome: str) -> float:
        """How many attempts the worker ended with `outcome` (its `soma_runs_total`)."""
        value = self.metrics.registry.get_sample_value("soma_runs_total", {"outcome": outcome})
        return value or 0.0

    async def wait_run(
        self, chat: Chat, run_id: str, statuses: Collection[str], timeout_s: float = WAIT_S
    ) -> Run:
        async def reached() -> Run | None:
            run = await self.run(chat, run_id)
            return run if run.status in statuses else None

        return await wait_for(reached, f"run {run_id} to reach {sorted(statuses)}", timeout_s)

    async def wait_counted(self, outcome: str, count: float, timeout_s: float = WAIT_S) -> None:
        async def reached() -> bool | None:
            return True if self.runs_counted(outcome) >= count else None

        await wait_for(reached, f"{count:g} attempts ending {outcome!r}", timeout_s)


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = WAIT_S
) -> T:
    """Poll `probe` until it returns something other than None."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(POLL_S)


@asynccontextmanager
async def running_stack(
    settings: Settings,
    *,
    orphans_at_start: bool = False,
    start_core: bool = True,
    memory: bool = False,
) -> AsyncIterator[RuntimeStack]:
    """Start the core services (dependency order), yield, stop whatever was started (reverse)."""
    stack = RuntimeStack(settings, orphans_at_start=orphans_at_start, memory=memory)
    try:
        if start_core:
            await stack.start(*stack.core())
        yield stack
    finally:
        await stack.stop()
