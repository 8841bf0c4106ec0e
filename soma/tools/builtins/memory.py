"""`memory_search` and `memory_save`: the agent's long-term memory as tools (ARCHITECTURE §11).

Both work in the calling session's scope (tenant, agent, the session's end user) through the
memory service, and ask the policy for `memory.read` / `memory.write` like every other path.
"""

from __future__ import annotations

from typing import Any, Protocol

from soma.memory.model import KINDS, MemoryUnavailableError, NewMemory, Recalled, Scope
from soma.memory.service import Remembered
from soma.policy.port import PolicyEngine, PolicyInput, Subject
from soma.storage.database import Database
from soma.tools.port import ToolCallContext, ToolOutcome, ToolSpec

MAX_RESULTS = 20
MAX_CONTENT_CHARS = 4_000

SEARCH = ToolSpec(
    name="memory_search",
    description=(
        "Search your long-term memory of this user (and what you remember for every user) "
        "for what is relevant to a query. Returns the closest memories, best first."
    ),
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 2000},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS, "default": 5},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    idempotent=True,
)
SAVE = ToolSpec(
    name="memory_save",
    description=(
        "Remember something about this user for later conversations: one short, "
        "self-contained sentence. A memory that changes an earlier one replaces it."
    ),
    parameters={
        "type": "object",
        "properties": {
            "content": {"type": "string", "minLength": 1, "maxLength": MAX_CONTENT_CHARS},
            "kind": {"type": "string", "enum": list(KINDS), "default": "fact"},
        },
        "required": ["content"],
        "additionalProperties": False,
    },
    # Saving the same content again finds it live and stores nothing (deduplication).
    idempotent=True,
)


class MemoryPort(Protocol):
    async def recall(self, scope: Scope, query: str, k: int) -> list[Recalled]: ...

    async def remember(self, new: NewMemory) -> Remembered: ...


class _MemoryTool:
    def __init__(self, memory: MemoryPort, database: Database, policy: PolicyEngine) -> None:
        self._memory = memory
        self._database = database
        self._policy = policy

    async def _scope(self, call: ToolCallContext, action: str) -> Scope | str:
        """The session's scope, or why the call may not touch it."""
        async with self._database.read() as uow:
            session = await uow.sessions.get(call.tenant_id, call.session_id)
        if session is None:
            return "the conversation no longer exists"
        decision = await self._policy.decide(
            PolicyInput(
                action=action,
                tenant=call.tenant_id,
                subject=Subject(f"agent:{call.agent_id}", ("chat",)),
                resource={"tenant_id": call.tenant_id, "agent_id": call.agent_id,
                          "user": session.user},
                context={"source": "tool", "run_id": call.run_id},
            )
        )  # fmt: skip
        if not decision.allow:
            return f"policy denied {action}: {decision.reason}"
        return Scope(call.tenant_id, call.agent_id, session.user)


class MemorySearchTool(_MemoryTool):
    @property
    def spec(self) -> ToolSpec:
        return SEARCH

    async def run(self, args: dict[str, Any], call: ToolCallContext) -> ToolOutcome:
        scope = await self._scope(call, "memory.read")
        if isinstance(scope, str):
            return ToolOutcome.error(scope)
        try:
            found = await self._memory.recall(scope, args["query"], int(args.get("limit", 5)))
        except MemoryUnavailableError as exc:
            return ToolOutcome.error(f"memory is unavailable: {exc}")
        if not found:
            return ToolOutcome.ok("Nothing remembered matches.", count=0)
        lines = [f"{i}. {r.memory.content}" for i, r in enumerate(found, 1)]
        return ToolOutcome.ok("\n".join(lines), count=len(found))


class MemorySaveTool(_MemoryTool):
    @property
    def spec(self) -> ToolSpec:
        return SAVE

    async def run(self, args: dict[str, Any], call: ToolCallContext) -> ToolOutcome:
        scope = await self._scope(call, "memory.write")
        if isinstance(scope, str):
            return ToolOutcome.error(scope)
        new = NewMemory(
            scope, args["content"], args.get("kind", "fact"), source="tool", source_id=call.call_id
        )
        try:
            result = await self._memory.remember(new)
        except MemoryUnavailableError as exc:
            return ToolOutcome.error(f"memory is unavailable: {exc}")
        if result.outcome == "duplicate":
            return ToolOutcome.ok("Already remembered.", memory_id=result.memory.id)
        replaced = f" (replaces {len(result.superseded)} earlier)" if result.superseded else ""
        return ToolOutcome.ok(f"Remembered{replaced}.", memory_id=result.memory.id)
