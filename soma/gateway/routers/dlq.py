"""`/v1/admin/dlq`: dead letters, their replay (once) and discard (audited).

A platform admin sees every letter (`tenant_id` filters); another admin sees its own
tenant's only, and any other letter answers 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Response

from soma.dlq.replay import discard, replay
from soma.gateway.admin_scope import managed_tenant
from soma.gateway.auth.deps import AdminCaller
from soma.gateway.auth.principal import Principal
from soma.gateway.context import GatewayContext
from soma.gateway.json_route import JsonRoute
from soma.gateway.pagination import Page, PageRequest, page_request
from soma.gateway.problems import not_found, problem_responses
from soma.gateway.schemas.common import ResponseBody
from soma.storage.repositories import DeadLetter

TenantParam = Annotated[str | None, Query(min_length=1, max_length=64)]


class DeadLetterOut(ResponseBody):
    id: str
    tenant_id: str | None
    topic: str
    key: str
    error: str
    attempts: int
    first_seen_at: datetime
    last_seen_at: datetime
    replayed_at: datetime | None
    payload: Any
    """The message as JSON when it is JSON, else its text (bytes undecodable as UTF-8 are
    replaced)."""

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterOut:
        try:
            payload: Any = orjson.loads(letter.payload)
        except orjson.JSONDecodeError:
            payload = letter.payload.decode("utf-8", "replace")
        return cls(
            id=letter.id,
            tenant_id=letter.tenant_id,
            topic=letter.topic,
            key=letter.key,
            error=letter.error,
            attempts=letter.attempts,
            first_seen_at=letter.created_at,
            last_seen_at=letter.last_seen_at or letter.created_at,
            replayed_at=letter.replayed_at,
            payload=payload,
        )


class ReplayOut(DeadLetterOut):
    replayed_now: bool
    """False when it was replayed before: nothing was published again."""


def dlq_router(ctx: GatewayContext) -> APIRouter:
    router = APIRouter(prefix="/v1/admin/dlq", tags=["admin"], route_class=JsonRoute)
    missing = problem_responses([404])

    async def scope(caller: Principal, tenant_id: str | None) -> str | None:
        """The tenant whose letters the caller sees; None: all (platform admins)."""
        if tenant_id is None and ctx.tenancy.is_platform_tenant(caller.tenant_id):
            return None
        return await managed_tenant(ctx, caller, tenant_id)

    @router.get("", response_model=Page[DeadLetterOut], responses=missing)
    async def list_dead_letters(
        caller: AdminCaller,
        page: Annotated[PageRequest, Depends(page_request)],
        tenant_id: TenantParam = None,
        topic: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    ) -> Page[DeadLetterOut]:
        visible = await scope(caller, tenant_id)
        async with ctx.database.read() as uow:
            letters, next_cursor = await uow.dead_letters.list(
                page.limit, page.cursor, tenant_id=visible, topic=topic
            )
        return page.page([DeadLetterOut.of(d) for d in letters], next_cursor)

    @router.post("/{letter_id}/replay", response_model=ReplayOut, responses=missing)
    async def replay_dead_letter(caller: AdminCaller, letter_id: str) -> ReplayOut:
        """Publish the message to its topic again; replaying it twice publishes it once."""
        done = await replay(
            ctx.database, letter_id, tenant_id=await scope(caller, None), actor=caller.actor,
            audit_tenant=caller.tenant_id,
        )  # fmt: skip
        if done is None:
            raise not_found("dead letter", letter_id)
        out = DeadLetterOut.of(done.letter).model_dump()
        return ReplayOut(**out, replayed_now=done.now)

    @router.delete("/{letter_id}", status_code=204, responses=missing)
    async def discard_dead_letter(caller: AdminCaller, letter_id: str) -> Response:
        found = await discard(
            ctx.database, letter_id, tenant_id=await scope(caller, None), actor=caller.actor,
            audit_tenant=caller.tenant_id,
        )  # fmt: skip
        if not found:
            raise not_found("dead letter", letter_id)
        return Response(status_code=204)

    return router
