"""`/v1/admin/audit`: a tenant's hash-chained audit trail, its NDJSON export and its check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator

from soma.gateway.admin_scope import managed_tenant
from soma.gateway.auth.deps import AdminCaller
from soma.gateway.context import GatewayContext
from soma.gateway.json_route import JsonRoute
from soma.gateway.pagination import Page, PageRequest, page_request
from soma.gateway.problems import problem_responses
from soma.gateway.schemas.common import ResponseBody
from soma.storage.repositories import AuditEntry, AuditFilter

NDJSON = "application/x-ndjson"
_EXPORT_BATCH = 500
Text = Annotated[str | None, Query(min_length=1, max_length=500)]


def _date_time(value: object) -> object:
    """RFC 3339 only, as documented: pydantic would also read `0.5` as a Unix time."""
    if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("expected an RFC 3339 date-time, e.g. 2026-12-03T10:00:00Z")
    return value


Instant = Annotated[datetime | None, BeforeValidator(_date_time)]


class AuditOut(ResponseBody):
    id: int
    tenant_id: str
    actor: str
    action: str
    resource: str
    data: dict[str, Any]
    prev_hash: str
    hash: str
    created_at: datetime

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditOut:
        return cls(
            id=entry.id,
            tenant_id=entry.tenant_id,
            actor=entry.actor,
            action=entry.action,
            resource=entry.resource,
            data=entry.data,
            prev_hash=entry.prev_hash,
            hash=entry.hash,
            created_at=entry.created_at,
        )


class Verification(ResponseBody):
    ok: bool
    checked: int
    """Entries found intact before the first broken one (all of them when ok)."""
    first_bad_id: int | None


def audit_filter(
    action: Text = None,
    actor: Text = None,
    resource: Text = None,
    since: Annotated[Instant, Query(description="inclusive")] = None,
    until: Annotated[Instant, Query(description="exclusive")] = None,
) -> AuditFilter:
    return AuditFilter(action=action, actor=actor, resource=resource, since=since, until=until)


def audit_router(ctx: GatewayContext) -> APIRouter:
    router = APIRouter(prefix="/v1/admin/audit", tags=["admin"], route_class=JsonRoute)
    missing = problem_responses([404])

    async def export(tenant_id: str, filters: AuditFilter) -> AsyncIterator[bytes]:
        cursor: str | None = None
        while True:
            async with ctx.database.read() as uow:
                entries, cursor = await uow.audit.list(
                    tenant_id, _EXPORT_BATCH, cursor, filters=filters
                )
            for entry in entries:
                yield orjson.dumps(AuditOut.of(entry).model_dump(mode="json")) + b"\n"
            if cursor is None:
                return

    @router.get(
        "",
        response_model=Page[AuditOut],
        responses={**missing, 200: {"content": {NDJSON: {}}}},
        description="Oldest first. `format=ndjson` (or `Accept: application/x-ndjson`) "
        "exports every matching entry, one JSON object a line, ignoring paging.",
    )
    async def list_audit(
        request: Request,
        caller: AdminCaller,
        page: Annotated[PageRequest, Depends(page_request)],
        filters: Annotated[AuditFilter, Depends(audit_filter)],
        tenant_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        format: Literal["json", "ndjson"] | None = None,
    ) -> Any:
        tenant = await managed_tenant(ctx, caller, tenant_id)
        wanted = format or ("ndjson" if NDJSON in request.headers.get("accept", "") else "json")
        if wanted == "ndjson":
            return StreamingResponse(export(tenant, filters), media_type=NDJSON)
        async with ctx.database.read() as uow:
            entries, next_cursor = await uow.audit.list(
                tenant, page.limit, page.cursor, filters=filters
            )
        return page.page([AuditOut.of(e) for e in entries], next_cursor)

    @router.get("/verify", response_model=Verification, responses=missing)
    async def verify_audit(
        caller: AdminCaller,
        tenant_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    ) -> Verification:
        """Recompute the tenant's chain; `first_bad_id` names the first entry that fails."""
        tenant = await managed_tenant(ctx, caller, tenant_id)
        async with ctx.database.read() as uow:
            result = await uow.audit.verify(tenant)
        return Verification(ok=result.ok, checked=result.checked, first_bad_id=result.first_bad_id)

    return router
