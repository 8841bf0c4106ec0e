"""`/v1/sessions`: conversations with one agent, and their messages in `seq` order."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from soma.gateway.auth.deps import ChatCaller
from soma.gateway.context import GatewayContext
from soma.gateway.json_route import JsonRoute
from soma.gateway.lookup import find_agent
from soma.gateway.pagination import Page, PageRequest, page_request
from soma.gateway.problems import bad_request, not_found, problem_responses, unprocessable
from soma.gateway.schemas.sessions import MessageOut, SessionCreate, SessionOut
from soma.gateway.tenancy import ASSISTANT

Caller = ChatCaller
Paging = Annotated[PageRequest, Depends(page_request)]


def sessions_router(ctx: GatewayContext) -> APIRouter:
    router = APIRouter(prefix="/v1/sessions", tags=["sessions"], route_class=JsonRoute)
    missing = problem_responses([404])

    @router.get("", response_model=Page[SessionOut])
    async def list_sessions(caller: Caller, page: Paging) -> Page[SessionOut]:
        async with ctx.database.read() as uow:
            items, next_cursor = await uow.sessions.list(caller.tenant_id, page.limit, page.cursor)
        return page.page([SessionOut.of(s) for s in items], next_cursor)

    @router.post("", status_code=201, response_model=SessionOut)
    async def create_session(caller: Caller, body: SessionCreate) -> SessionOut:
        ref = body.agent or ASSISTANT
        if ref == ASSISTANT:
            await ctx.tenancy.ensure_assistant(caller.tenant_id)
        async with ctx.database.transaction() as uow:
            agent = await find_agent(uow, caller.tenant_id, ref)
            if agent is None:
                raise unprocessable(f"agent {ref!r} not found")
            session = await uow.sessions.create(
                caller.tenant_id,
                agent_id=agent.id,
                title=body.title,
                metadata=body.metadata,
                user=body.user,
            )
        return SessionOut.of(session)

    @router.get("/{session_id}", response_model=SessionOut, responses=missing)
    async def get_session(caller: Caller, session_id: str) -> SessionOut:
        async with ctx.database.read() as uow:
            session = await uow.sessions.get(caller.tenant_id, session_id)
        if session is None:
            raise not_found("session", session_id)
        return SessionOut.of(session)

    @router.delete("/{session_id}", status_code=204, responses=missing)
    async def delete_session(caller: Caller, session_id: str) -> Response:
        async with ctx.database.transaction() as uow:
            deleted = await uow.sessions.delete(caller.tenant_id, session_id)
        if not deleted:
            raise not_found("session", session_id)
        return Response(status_code=204)

    @router.get("/{session_id}/messages", response_model=Page[MessageOut], responses=missing)
    async def list_messages(caller: Caller, session_id: str, page: Paging) -> Page[MessageOut]:
        async with ctx.database.read() as uow:
            if await uow.sessions.get(caller.tenant_id, session_id) is None:
                raise not_found("session", session_id)
            try:
                items, next_cursor = await uow.messages.list(
                    caller.tenant_id, session_id, page.limit, page.cursor
                )
            except ValueError:
                raise bad_request("invalid cursor") from None
        return page.page([MessageOut.of(m) for m in items], next_cursor)

    return router
