"""Runs: status, the SSE event stream with `Last-Event-ID` resume, and cancellation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, StreamingResponse

from soma.core.errors import ConflictError, NotFoundError
from soma.gateway.auth.deps import ChatCaller
from soma.gateway.json_route import JsonRoute
from soma.gateway.problems import conflict, not_found
from soma.gateway.runs_view import RunsContext
from soma.gateway.sse import SSE_HEADERS, SSE_MEDIA_TYPE, parse_last_event_id, run_stream
from soma.runs.commands import cancel_run
from soma.runs.events import RunStatus
from soma.runs.views import run_json


def runs_router(ctx: RunsContext) -> APIRouter:
    router = APIRouter(tags=["runs"], route_class=JsonRoute)

    @router.get("/v1/runs/{run_id}")
    async def get_run(run_id: str, principal: ChatCaller) -> dict[str, Any]:
        async with ctx.database.read() as uow:
            run = await uow.runs.get(principal.tenant_id, run_id)
        if run is None:
            raise not_found("run", run_id)
        return run_json(run)

    @router.get("/v1/runs/{run_id}/events", response_class=StreamingResponse)
    async def run_events(
        run_id: str,
        principal: ChatCaller,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
        after: Annotated[int | None, Query(ge=0)] = None,
    ) -> StreamingResponse:
        async with ctx.database.read() as uow:
            run = await uow.runs.get(principal.tenant_id, run_id)
        if run is None:
            raise not_found("run", run_id)
        start = parse_last_event_id(last_event_id, after)
        return StreamingResponse(
            run_stream(ctx.reader, principal.tenant_id, run_id, start, ctx.closing),
            media_type=SSE_MEDIA_TYPE,
            headers=SSE_HEADERS,
        )

    @router.post(
        "/v1/runs/{run_id}/cancel",
        responses={202: {"description": "a running run was asked to stop; it ends shortly"}},
    )
    async def cancel(run_id: str, principal: ChatCaller) -> JSONResponse:
        try:
            run = await cancel_run(
                ctx.database, ctx.store, ctx.streams, ctx.flags, principal.tenant_id, run_id,
                actor=principal.actor,
            )  # fmt: skip
        except NotFoundError:
            raise not_found("run", run_id) from None
        except ConflictError as exc:
            raise conflict(str(exc)) from None
        done = run.status == RunStatus.CANCELLED
        return JSONResponse(run_json(run), status_code=200 if done else 202)

    return router
