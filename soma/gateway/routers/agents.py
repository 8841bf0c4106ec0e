"""`/v1/agents`: a tenant's agents; `assistant` always exists and cannot be deleted."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from soma.core.errors import ConflictError
from soma.gateway.auth.deps import ChatCaller
from soma.gateway.context import GatewayContext
from soma.gateway.json_route import JsonRoute
from soma.gateway.lookup import find_agent
from soma.gateway.pagination import Page, PageRequest, page_request
from soma.gateway.problems import conflict, not_found, problem_responses, unprocessable
from soma.gateway.schemas.agents import AgentCreate, AgentOut, AgentUpdate
from soma.gateway.tenancy import ASSISTANT
from soma.storage.repositories import AgentSettings

Caller = ChatCaller
Paging = Annotated[PageRequest, Depends(page_request)]


def agents_router(ctx: GatewayContext) -> APIRouter:
    router = APIRouter(prefix="/v1/agents", tags=["agents"], route_class=JsonRoute)
    missing = problem_responses([404])
    clash = problem_responses([409])
    both = problem_responses([404, 409])

    def model_of(name: str | None) -> str:
        if name is None:
            return ctx.settings.llm.default_model
        model = ctx.declared_model(name)
        if model is None:
            declared = ", ".join(sorted(ctx.settings.llm.models))
            raise unprocessable(f"model {name!r} is not declared in llm.models ({declared})")
        return model

    @router.get("", response_model=Page[AgentOut])
    async def list_agents(caller: Caller, page: Paging) -> Page[AgentOut]:
        if page.cursor is None:
            await ctx.tenancy.ensure_assistant(caller.tenant_id)
        async with ctx.database.read() as uow:
            agents, next_cursor = await uow.agents.list(caller.tenant_id, page.limit, page.cursor)
        return page.page([AgentOut.of(a) for a in agents], next_cursor)

    @router.post("", status_code=201, response_model=AgentOut, responses=clash)
    async def create_agent(caller: Caller, body: AgentCreate) -> AgentOut:
        model = model_of(body.model)
        settings = AgentSettings(
            max_steps=body.max_steps,
            run_timeout_s=body.run_timeout_s,
            concurrency=body.concurrency,
            metadata=body.metadata,
            require_approval=tuple(body.require_approval),
            recall_k=body.recall_k,
            recall_budget_tokens=body.recall_budget_tokens,
        )
        try:
            async with ctx.database.transaction() as uow:
                agent = await uow.agents.create(
                    caller.tenant_id,
                    name=body.name,
                    instructions=body.instructions,
                    model=model,
                    tools=body.tools,
                    memory=body.memory,
                    settings=settings,
                )
                await uow.audit.append(
                    caller.tenant_id, actor=caller.actor, action="agent.create",
                    resource=f"agent:{agent.id}", data={"name": agent.name},
                )  # fmt: skip
        except ConflictError as exc:
            raise conflict(str(exc)) from None
        return AgentOut.of(agent)

    @router.get("/{agent_id}", response_model=AgentOut, responses=missing)
    async def get_agent(caller: Caller, agent_id: str) -> AgentOut:
        async with ctx.database.read() as uow:
            agent = await find_agent(uow, caller.tenant_id, agent_id)
        if agent is None:
            raise not_found("agent", agent_id)
        return AgentOut.of(agent)

    @router.patch("/{agent_id}", response_model=AgentOut, responses=both)
    async def update_agent(caller: Caller, agent_id: str, body: AgentUpdate) -> AgentOut:
        if body.resets_model:
            model: str | None = ctx.settings.llm.default_model
        else:
            model = model_of(body.model) if body.model is not None else None
        try:
            async with ctx.database.transaction() as uow:
                agent = await find_agent(uow, caller.tenant_id, agent_id)
                if agent is None:
                    raise not_found("agent", agent_id)
                if agent.name == ASSISTANT and body.name not in (None, ASSISTANT):
                    raise conflict(f"the default agent {ASSISTANT!r} cannot be renamed")
                settings = replace(
                    agent.settings,
                    **{
                        field: getattr(body, field)
                        for field in ("max_steps", "run_timeout_s", "concurrency", "metadata")
                        if getattr(body, field) is not None
                    },
                )
                if body.require_approval is not None:
                    settings = replace(settings, require_approval=tuple(body.require_approval))
                recall = ("recall_k", "recall_budget_tokens")
                settings = replace(
                    settings,
                    **{f: getattr(body, f) for f in recall if f in body.model_fields_set},
                )
                updated = await uow.agents.update(
                    caller.tenant_id,
                    agent.id,
                    name=body.name,
                    instructions=body.instructions,
                    model=model,
                    tools=body.tools,
                    memory=body.memory,
                    settings=settings,
                )
                if updated is not None:
                    changed = sorted(body.model_dump(exclude_unset=True))
                    await uow.audit.append(
                        caller.tenant_id, actor=caller.actor, action="agent.update",
                        resource=f"agent:{agent.id}", data={"fields": changed},
                    )  # fmt: skip
        except ConflictError as exc:
            raise conflict(str(exc)) from None
        if updated is None:
            raise not_found("agent", agent_id)
        return AgentOut.of(updated)

    @router.delete("/{agent_id}", status_code=204, responses=both)
    async def delete_agent(caller: Caller, agent_id: str) -> Response:
        async with ctx.database.transaction() as uow:
            agent = await find_agent(uow, caller.tenant_id, agent_id)
            if agent is None:
                raise not_found("agent", agent_id)
            if agent.name == ASSISTANT:
                raise conflict(f"the default agent {ASSISTANT!r} cannot be deleted")
            await uow.agents.delete(caller.tenant_id, agent.id)
            await uow.audit.append(
                caller.tenant_id, actor=caller.actor, action="agent.delete",
                resource=f"agent:{agent.id}", data={"name": agent.name},
            )  # fmt: skip
        return Response(status_code=204)

    return router
