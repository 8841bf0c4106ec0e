"""The platform's services and their dependencies, in one list (ARCHITECTURE §3)."""

from __future__ import annotations

from opentelemetry import trace

from orchestrator.registry import ServiceContext, ServiceDefinition, ServiceRegistry
from soma.bus.outbox import OutboxRelay
from soma.bus.port import Bus
from soma.bus.service import create_bus
from soma.cache import service as cache_service
from soma.cache.service import CacheService, create_cache
from soma.config import Settings
from soma.core import Service
from soma.core.ids import worker_id
from soma.dlq.service import DeadLetterService
from soma.doors.a2a.door import a2a_card_router, a2a_door
from soma.doors.openai.chat import chat_door
from soma.doors.openai.responses import responses_door
from soma.gateway.directory import AgentNames, SessionDirectory, agents_by_name
from soma.gateway.routers.chat import MessagePost, chat_router
from soma.gateway.routers.memories import memories_router
from soma.gateway.routers.runs import runs_router
from soma.gateway.routers.tools import tools_router
from soma.gateway.routers.uploads import UploadsContext, uploads_router
from soma.gateway.runs_view import ChatMetrics, RunsContext
from soma.gateway.service import GatewayService
from soma.gateway.tenancy import Tenancy
from soma.limits.governor import Limits
from soma.limits.source import StoredOverrides
from soma.llm import service as llm_service
from soma.llm.service import LLMService
from soma.memory import service as memory_service
from soma.memory.extract import Extractor, LLMExtractor, VerbatimExtractor
from soma.memory.pipeline import MemoryPipeline
from soma.memory.service import UnifiedMemoryService
from soma.policy import service as policy_service
from soma.policy.service import PolicyService, create_policy
from soma.runs.counted import CountedRunStore
from soma.runs.reader import RunEventReader
from soma.runtime.inflight import InFlight
from soma.runtime.recall import Recaller
from soma.runtime.recovery import RecoveryService
from soma.runtime.turn import TurnDeps
from soma.runtime.worker import ConversationWorker
from soma.storage.service import DatabaseService
from soma.tools.builtins.files import FilesTool
from soma.tools.builtins.http_fetch import HttpFetchTool
from soma.tools.builtins.memory import MemorySaveTool, MemorySearchTool
from soma.tools.builtins.provider import BuiltinTools
from soma.tools.builtins.read_upload import ReadUploadTool
from soma.tools.catalog import Catalog
from soma.tools.executor import Executor, ExecutorDeps, ToolMetrics
from soma.tools.mcp import mcp_providers
from soma.tools.published import CatalogReader
from soma.tools.sandbox.provider import SandboxProvider
from soma.tools.service import ToolsService
from soma.tools.workspace import Workspaces
from soma.uploads.attach import AttachmentReader
from soma.uploads.files import UploadFiles


def _database(ctx: ServiceContext) -> Service:
    return DatabaseService(ctx.settings, ctx.metrics)


def _cache(ctx: ServiceContext) -> Service:
    return create_cache(ctx.settings, ctx.metrics)


def _bus(ctx: ServiceContext) -> Service:
    return create_bus(ctx.settings, ctx.metrics)


def _policy(ctx: ServiceContext) -> Service:
    return create_policy(ctx.settings, ctx.metrics)


def _llm(ctx: ServiceContext) -> Service:
    return LLMService(ctx.settings, ctx.metrics)


def _outbox(ctx: ServiceContext) -> Service:
    database = ctx.get("database", DatabaseService)
    bus = ctx.get("bus", Bus)  # type: ignore[type-abstract]
    return OutboxRelay(database.outbox_store, bus, ctx.settings.outbox, ctx.metrics)


def _limits(ctx: ServiceContext) -> Limits:
    storage = ctx.get("database", DatabaseService)
    quotas = ctx.get("cache", CacheService).quotas
    return Limits(ctx.settings.limits, quotas, StoredOverrides(storage.database))


def _gateway(ctx: ServiceContext) -> Service:
    storage = ctx.get("database", DatabaseService)
    limits = _limits(ctx)
    database, store = storage.database, CountedRunStore(storage.run_store, limits)
    cache = ctx.get("cache", CacheService)
    policy = ctx.get("policy", PolicyService)
    runtime = ctx.settings.runtime
    runs = RunsContext(
        database=database,
        store=store,
        sessions=SessionDirectory(store, runtime.agent_cache_ttl_s),
        streams=cache.streams,
        flags=cache.kv,
        policy=policy,
        reader=RunEventReader(store, cache.streams, runtime.sse_heartbeat_s),
        metrics=ChatMetrics(ctx.metrics),
        agents=AgentNames(agents_by_name(database), runtime.agent_cache_ttl_s),
        admission=limits,
    )
    message_post = MessagePost(runs)
    return GatewayService(
        ctx.settings,
        ctx.metrics,
        database,
        cache.kv,
        cache.quotas,
        extra_routers=(
            chat_router(message_post),
            runs_router(runs),
            chat_door(runs),
            responses_door(runs),
            a2a_door(runs),
            tools_router(database, CatalogReader(cache.kv)),
            memories_router(
                ctx.get("memory", UnifiedMemoryService),
                database,
                Tenancy(database, ctx.settings.llm.default_model),
                policy,
                ctx.settings.memory,
            ),
            uploads_router(
                UploadsContext(
                    database,
                    UploadFiles(ctx.settings.data_dir / "uploads"),
                    policy,
                    ctx.settings.uploads,
                )
            ),
        ),
        closing=runs.closing,
        public_routers=(a2a_card_router(),),
        limits=limits,
        message_post=message_post,
    )


def _turn_deps(ctx: ServiceContext) -> TurnDeps:
    storage = ctx.get("database", DatabaseService)
    cache = ctx.get("cache", CacheService)
    owner = worker_id()
    runtime = ctx.settings.runtime
    limits = _limits(ctx)
    return TurnDeps(
        database=storage.database,
        store=CountedRunStore(storage.run_store, limits),
        tool_store=storage.tool_store,
        streams=cache.streams,
        models=ctx.get("llm", LLMService),
        tools=CatalogReader(cache.kv),
        inflight=InFlight(storage.run_store, cache.kv, owner, runtime.lease_s),
        runtime=runtime,
        llm=ctx.settings.llm,
        owner=owner,
        recaller=Recaller(
            ctx.get("memory", UnifiedMemoryService),
            ctx.get("policy", PolicyService),
            ctx.settings.memory,
        ),
        tokens=limits,
        attachments=AttachmentReader(
            storage.database,
            UploadFiles(ctx.settings.data_dir / "uploads"),
            ctx.settings.uploads.attachment_tokens,
        ),
    )


def _conversation(ctx: ServiceContext) -> Service:
    bus = ctx.get("bus", Bus)  # type: ignore[type-abstract]
    tracer = trace.get_tracer("soma.runtime")
    return ConversationWorker(bus, _turn_deps(ctx), ctx.metrics, tracer)


def _recovery(ctx: ServiceContext) -> Service:
    storage = ctx.get("database", DatabaseService)
    return RecoveryService(
        storage.database,
        CountedRunStore(storage.run_store, _limits(ctx)),
        ctx.get("cache", CacheService).streams,
        ctx.settings.runtime,
        ctx.metrics,
        # Nothing survives a restart on the in-process bus, so every active run is orphaned.
        orphans_at_start=ctx.settings.bus.backend == "local",
    )


def _tools(ctx: ServiceContext) -> Service:
    settings, tools = ctx.settings, ctx.settings.tools
    storage = ctx.get("database", DatabaseService)
    cache = ctx.get("cache", CacheService)
    workspaces = Workspaces(settings.data_dir / "workspaces", tools.workspace_quota_bytes)
    # Sandboxed code must never read the platform's own files (keys, database, uploads).
    sandbox = SandboxProvider(tools, protected=[settings.data_dir])
    memory = ctx.get("memory", UnifiedMemoryService)
    policy = ctx.get("policy", PolicyService)
    uploads = UploadFiles(settings.data_dir / "uploads")
    builtins = BuiltinTools(
        [
            FilesTool(workspaces),
            HttpFetchTool(tools.http_fetch, tools.max_output_chars),
            MemorySearchTool(memory, storage.database, policy),
            MemorySaveTool(memory, storage.database, policy),
            ReadUploadTool(storage.database, uploads),
        ]
    )
    catalog = Catalog(
        [sandbox, builtins, *mcp_providers(tools.mcp_servers, tools.max_output_chars)]
    )
    tracer = trace.get_tracer("soma.tools")
    executor = Executor(
        ExecutorDeps(
            store=storage.tool_store,
            catalog=catalog,
            workspaces=workspaces,
            policy=policy,
            settings=tools,
            metrics=ToolMetrics(ctx.metrics),
            tracer=tracer,
        )
    )
    return ToolsService(
        bus=ctx.get("bus", Bus),  # type: ignore[type-abstract]
        database=storage.database,
        store=storage.tool_store,
        streams=cache.streams,
        kv=cache.kv,
        catalog=catalog,
        executor=executor,
        isolation=sandbox.isolation,
        runtime=settings.runtime,
        approval_timeout_s=tools.approval_timeout_s,
        tracer=tracer,
        # Nothing survives a restart on the in-process bus: every unfinished call is ours.
        orphans_at_start=settings.bus.backend == "local",
    )


def _dead_letters(ctx: ServiceContext) -> Service:
    bus = ctx.get("bus", Bus)  # type: ignore[type-abstract]
    return DeadLetterService(bus, ctx.get("database", DatabaseService).database)


def _memory(ctx: ServiceContext) -> Service:
    database = ctx.get("database", DatabaseService).database
    return UnifiedMemoryService(ctx.settings.memory, database, ctx.metrics)


def _memory_pipeline(ctx: ServiceContext) -> Service:
    settings = ctx.settings.memory
    extractor: Extractor = VerbatimExtractor()
    if settings.extraction == "llm":
        extractor = LLMExtractor(ctx.get("llm", LLMService), settings.extraction_model)
    return MemoryPipeline(
        bus=ctx.get("bus", Bus),  # type: ignore[type-abstract]
        database=ctx.get("database", DatabaseService).database,
        memory=ctx.get("memory", UnifiedMemoryService),
        extractor=extractor,
        policy=ctx.get("policy", PolicyService),
        metrics=ctx.metrics,
    )


def _bus_plan(settings: Settings) -> str:
    if settings.bus.backend == "kafka":
        kafka = settings.bus.kafka
        return f"kafka {kafka.bootstrap_servers} (topics {kafka.topic_prefix}*)"
    return "local (in-process)"


def definitions() -> list[ServiceDefinition]:
    return [
        ServiceDefinition("database", _database, describe=DatabaseService.describe),
        ServiceDefinition("cache", _cache, describe=cache_service.describe),
        ServiceDefinition("bus", _bus, describe=_bus_plan),
        ServiceDefinition("policy", _policy, describe=policy_service.describe),
        ServiceDefinition("llm", _llm, describe=llm_service.describe),
        ServiceDefinition(
            "memory",
            _memory,
            depends_on=("database",),
            # Without memory, chats of agents without it still work; agents with memory fail
            # their runs saying why, and the memory routes answer 503.
            critical=False,
            describe=lambda s: memory_service.describe(s.memory),
        ),
        ServiceDefinition(
            "outbox",
            _outbox,
            depends_on=("database", "bus"),
            describe=lambda s: f"relay every {s.outbox.poll_interval_s:g}s or on commit",
        ),
        ServiceDefinition(
            "gateway",
            _gateway,
            depends_on=("database", "cache", "policy", "memory", "outbox"),
            describe=lambda s: f"http://{s.http.host}:{s.http.port}/v1",
        ),
        ServiceDefinition(
            "conversation",
            _conversation,
            depends_on=("database", "cache", "bus", "llm", "policy", "memory", "outbox"),
            describe=lambda s: f"up to {s.runtime.max_concurrent_runs} runs at once",
        ),
        ServiceDefinition(
            "tools",
            _tools,
            depends_on=("database", "cache", "bus", "policy", "memory", "outbox"),
            # Without tools (no sandbox here, an MCP server down) chats still work; the
            # service says why in health, and runs that need a tool are told.
            critical=False,
            describe=lambda s: (
                f"sandbox {s.tools.sandbox.isolation}, {len(s.tools.mcp_servers)} MCP server(s)"
            ),
        ),
        ServiceDefinition(
            "memory_pipeline",
            _memory_pipeline,
            depends_on=("database", "bus", "policy", "llm", "memory"),
            critical=False,
            describe=lambda s: f"keeps {s.memory.extraction} memories of completed runs",
        ),
        ServiceDefinition(
            "dead_letters",
            _dead_letters,
            depends_on=("database", "bus"),
            critical=False,  # an archive of failures: its outage must not stop live traffic
            describe=lambda s: "keeps the <topic>.dlq messages for /v1/admin/dlq",
        ),
        ServiceDefinition(
            "recovery",
            _recovery,
            depends_on=("database", "cache", "outbox"),
            describe=lambda s: f"sweep every {s.runtime.recovery_interval_s:g}s",
        ),
    ]


def build_registry() -> ServiceRegistry:
    registry = ServiceRegistry()
    registry.register_all(definitions())
    return registry
