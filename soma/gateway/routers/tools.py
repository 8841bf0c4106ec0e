"""`/v1/tools` (the catalog) and `/v1/approvals` (tool calls waiting for a person)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import Field

from soma.gateway.auth.deps import ChatCaller
from soma.gateway.json_route import JsonRoute
from soma.gateway.pagination import Page, PageRequest, page_request
from soma.gateway.problems import conflict, not_found, problem_responses
from soma.gateway.schemas.common import RequestBody, ResponseBody
from soma.runs.tool_steps import decide
from soma.storage.database import Database
from soma.storage.repositories import Approval, ToolCall
from soma.tools.published import CatalogReader, specs_of

Paging = Annotated[PageRequest, Depends(page_request)]


class ToolOut(ResponseBody):
    name: str
    description: str
    parameters: dict[str, Any]
    idempotent: bool
    source: str


class CatalogOut(ResponseBody):
    isolation: str
    """The sandbox isolation in force for `python` and `shell`."""
    items: list[ToolOut]


class ApprovalOut(ResponseBody):
    id: str
    run_id: str
    tool_call_id: str
    tool: str
    args: dict[str, Any]
    status: str
    reason: str | None
    decided_by: str | None
    created_at: datetime
    decided_at: datetime | None

    @classmethod
    def of(cls, approval: Approval, call: ToolCall | None) -> ApprovalOut:
        return cls(
            id=approval.id,
            run_id=approval.run_id,
            tool_call_id=approval.tool_call_id,
            tool=call.name if call else "",
            args=call.args if call else {},
            status=approval.status,
            reason=approval.reason,
            decided_by=approval.decided_by,
            created_at=approval.created_at,
            decided_at=approval.decided_at,
        )


class Decision(RequestBody):
    decision: Literal["approve", "deny"]
    reason: Annotated[str, Field(max_length=2_000)] | None = None


def tools_router(database: Database, catalog: CatalogReader) -> APIRouter:
    router = APIRouter(tags=["tools"], route_class=JsonRoute)

    @router.get("/v1/tools", response_model=CatalogOut, responses=problem_responses([503]))
    async def list_tools(caller: ChatCaller) -> CatalogOut:
        published = await catalog.get()
        if published is None:
            raise HTTPException(
                503, "no tools service is running: the catalog is not published",
                headers={"Retry-After": "5"},
            )  # fmt: skip
        items = [ToolOut(**spec) for spec in specs_of(published.tools)]
        return CatalogOut(isolation=published.isolation, items=items)

    @router.get("/v1/approvals", response_model=Page[ApprovalOut])
    async def list_approvals(
        caller: ChatCaller,
        page: Paging,
        status: Annotated[Literal["pending", "approved", "denied"] | None, Query()] = None,
    ) -> Page[ApprovalOut]:
        tenant = caller.tenant_id
        async with database.read() as uow:
            found = await uow.approvals.list(tenant, page.limit, page.cursor, status=status)
            calls = {
                a.tool_call_id: await uow.tool_calls.get(tenant, a.tool_call_id)
                for a in found.items
            }
        items = [ApprovalOut.of(a, calls.get(a.tool_call_id)) for a in found.items]
        return page.page(items, found.next_cursor)

    @router.post(
        "/v1/approvals/{approval_id}",
        response_model=ApprovalOut,
        responses=problem_responses([404, 409]),
    )
    async def decide_approval(caller: ChatCaller, approval_id: str, body: Decision) -> ApprovalOut:
        async with database.transaction() as uow:
            existing = await uow.approvals.get(caller.tenant_id, approval_id)
            if existing is None:
                raise not_found("approval", approval_id)
            decided = await decide(
                uow,
                caller.tenant_id,
                approval_id,
                approve=body.decision == "approve",
                actor=caller.actor,
                reason=body.reason,
            )
            if not decided:
                raise conflict(f"approval {approval_id!r} is already {existing.status}")
            approval = await uow.approvals.get(caller.tenant_id, approval_id)
            call = await uow.tool_calls.get(caller.tenant_id, existing.tool_call_id)
        assert approval is not None
        return ApprovalOut.of(approval, call)

    return router
