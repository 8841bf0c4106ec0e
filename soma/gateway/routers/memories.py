"""`/v1/memories`: list, search, keep, delete, forget a user, export (ARCHITECTURE §9, §12)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, TypeVar

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.responses import StreamingResponse

from soma.config.memory import MemorySettings
from soma.gateway.auth.deps import ChatCaller
from soma.gateway.auth.principal import Principal
from soma.gateway.json_route import JsonRoute
from soma.gateway.lookup import find_agent
from soma.gateway.pagination import Page, PageRequest, page_request
from soma.gateway.ports import Memories
from soma.gateway.problems import bad_request, not_found, problem_responses, unprocessable
from soma.gateway.schemas.common import EndUser
from soma.gateway.schemas.memories import Forgotten, MemoryCreate, MemoryOut, Remembered
from soma.gateway.tenancy import ASSISTANT, Tenancy
from soma.memory.model import MemoryUnavailableError, NewMemory, Scope
from soma.policy.port import PolicyEngine, PolicyInput, Subject
from soma.storage.database import Database

Paging = Annotated[PageRequest, Depends(page_request)]
AgentRef = Annotated[
    str | None, Query(min_length=1, max_length=200, description="Agent name or id.")
]
UserRef = Annotated[EndUser | None, Query(description="An end user (as named by sessions).")]
MAX_SEARCH = 100
NDJSON = "application/x-ndjson"
RETRY_AFTER_S = "5"
T = TypeVar("T")


def memories_router(
    memory: Memories,
    database: Database,
    tenancy: Tenancy,
    policy: PolicyEngine,
    settings: MemorySettings,
) -> APIRouter:
    router = APIRouter(prefix="/v1/memories", tags=["memories"], route_class=JsonRoute)

    async def allowed(
        caller: Principal, action: str, agent_id: str | None, user: str | None
    ) -> None:
        decision = await policy.decide(
            PolicyInput(
                action=action,
                tenant=caller.tenant_id,
                subject=Subject(caller.key_id, tuple(sorted(caller.scopes))),
                resource={"tenant_id": caller.tenant_id, "agent_id": agent_id, "user": user},
                context={"source": "api"},
            )
        )
        if not decision.allow:
            raise HTTPException(403, f"policy denied {action}: {decision.reason}")

    async def agent_id_of(caller: Principal, ref: str | None, default: bool) -> str | None:
        if ref is None and not default:
            return None
        ref = ref or ASSISTANT
        if ref == ASSISTANT:
            await tenancy.ensure_assistant(caller.tenant_id)
        async with database.read() as uow:
            agent = await find_agent(uow, caller.tenant_id, ref)
        if agent is None:
            raise not_found("agent", ref)
        return agent.id

    @router.get("", response_model=Page[MemoryOut], responses=problem_responses([403, 404, 503]))
    async def list_memories(
        caller: ChatCaller,
        page: Paging,
        query: Annotated[
            str | None,
            Query(min_length=1, max_length=4_000, description="Semantic search when given."),
        ] = None,
        agent: AgentRef = None,
        user: UserRef = None,
    ) -> Page[MemoryOut]:
        """Newest first (paginated); with `query`, the `limit` most similar memories of the
        agent (default `assistant`) for `user` plus the agent's shared ones."""
        agent_id = await agent_id_of(caller, agent, default=query is not None)
        await allowed(caller, "memory.read", agent_id, user)
        if query is not None:
            if page.cursor is not None:
                raise bad_request("a semantic search has one page: drop cursor")
            assert agent_id is not None
            scope = Scope(caller.tenant_id, agent_id, user)
            found = await _available(memory.recall(scope, query, min(page.limit, MAX_SEARCH)))
            return page.page([MemoryOut.of(r.memory, r.score) for r in found], None)
        listed = await memory.newest(
            caller.tenant_id, page.limit, page.cursor, agent_id=agent_id, user=user
        )
        return page.page([MemoryOut.of(m) for m in listed.items], listed.next_cursor)

    @router.post(
        "",
        status_code=201,
        response_model=Remembered,
        responses={200: {"model": Remembered}, **problem_responses([403, 404, 503])},
    )
    async def create_memory(
        caller: ChatCaller, body: MemoryCreate, response: Response
    ) -> Remembered:
        """Keep a memory; an equal live one answers 200 (nothing written), a similar one of the
        same kind is superseded by it."""
        if len(body.content) > settings.max_content_chars:
            raise unprocessable(f"content is longer than {settings.max_content_chars} characters")
        agent_id = await agent_id_of(caller, body.agent, default=True)
        assert agent_id is not None
        await allowed(caller, "memory.write", agent_id, body.user)
        new = NewMemory(
            Scope(caller.tenant_id, agent_id, body.user),
            body.content,
            body.kind,
            tuple(body.tags),
            source="api",
            source_id=caller.key_id,
        )
        result = await _available(memory.remember(new, caller.actor))
        if result.outcome == "duplicate":
            response.status_code = 200
        out = MemoryOut.of(result.memory).model_dump()
        return Remembered(**out, outcome=result.outcome, superseded=list(result.superseded))

    @router.delete("", response_model=Forgotten, responses=problem_responses([403, 404]))
    async def forget_user(
        caller: ChatCaller,
        user: Annotated[EndUser, Query(description="The end user whose memories all go.")],
        agent: AgentRef = None,
    ) -> Forgotten:
        """Right to be forgotten: delete every memory of one end user (superseded ones too)."""
        agent_id = await agent_id_of(caller, agent, default=False)
        await allowed(caller, "memory.write", agent_id, user)
        deleted = await _available(
            memory.forget_user(caller.tenant_id, user, agent_id, caller.actor)
        )
        return Forgotten(deleted=deleted)

    @router.get(
        "/export",
        response_class=StreamingResponse,
        responses={200: {"content": {NDJSON: {}}}, **problem_responses([403, 404])},
    )
    async def export_memories(
        caller: ChatCaller, agent: AgentRef = None, user: UserRef = None
    ) -> StreamingResponse:
        """Every memory, superseded ones too, oldest first: one JSON object per line."""
        agent_id = await agent_id_of(caller, agent, default=False)
        await allowed(caller, "memory.read", agent_id, user)

        async def lines() -> AsyncIterator[bytes]:
            async for item in memory.export(caller.tenant_id, agent_id=agent_id, user=user):
                yield orjson.dumps(MemoryOut.of(item).model_dump(mode="json")) + b"\n"

        return StreamingResponse(lines(), media_type=NDJSON)

    @router.get("/{memory_id}", response_model=MemoryOut, responses=problem_responses([403, 404]))
    async def get_memory(caller: ChatCaller, memory_id: str) -> MemoryOut:
        found = await memory.get(caller.tenant_id, memory_id)
        if found is None:
            raise not_found("memory", memory_id)
        await allowed(caller, "memory.read", found.agent_id, found.user)
        return MemoryOut.of(found)

    @router.delete("/{memory_id}", status_code=204, responses=problem_responses([403, 404]))
    async def delete_memory(caller: ChatCaller, memory_id: str) -> Response:
        found = await memory.get(caller.tenant_id, memory_id)
        if found is None:
            raise not_found("memory", memory_id)
        await allowed(caller, "memory.write", found.agent_id, found.user)
        if not await _available(memory.delete(caller.tenant_id, memory_id, caller.actor)):
            raise not_found("memory", memory_id)
        return Response(status_code=204)

    return router


async def _available(work: Awaitable[T]) -> T:
    try:
        return await work
    except MemoryUnavailableError as exc:
        raise HTTPException(
            503, f"memory is unavailable: {exc}", headers={"Retry-After": RETRY_AFTER_S}
        ) from None
