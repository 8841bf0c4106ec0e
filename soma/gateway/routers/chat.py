"""`POST /v1/sessions/{id}/messages`: accept a message as a durable run (ARCHITECTURE §6, §9)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from soma.core.errors import ConflictError, NotFoundError
from soma.gateway.auth.deps import ChatCaller
from soma.gateway.json_route import JsonRoute
from soma.gateway.problems import conflict, not_found, unprocessable
from soma.gateway.runs_view import RunsContext
from soma.gateway.schemas.common import Metadata
from soma.gateway.sse import SSE_HEADERS, SSE_MEDIA_TYPE, run_stream
from soma.policy.port import PolicyInput, Subject
from soma.runs.commands import accept_message
from soma.runs.journal import publish
from soma.runs.views import message_json, run_json

_log = logging.getLogger("soma.gateway.chat")
MAX_CONTENT_CHARS = 100_000
MAX_IDEMPOTENCY_KEY = 200
WAIT_MARGIN_S = 30.0
RETRY_AFTER_S = "5"
JSON = "application/json"


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    attachments: list[str] = Field(default_factory=list, max_length=20)
    metadata: Metadata = Field(default_factory=dict)


class Accepted(BaseModel):
    message_id: str
    run_id: str


def chat_router(ctx: RunsContext) -> APIRouter:
    router = APIRouter(tags=["chat"], route_class=JsonRoute)

    @router.post(
        "/v1/sessions/{session_id}/messages",
        status_code=202,
        response_model=Accepted,
        responses={200: {"description": "with ?wait=true: the finished run and its reply"}},
    )
    async def send_message(
        session_id: str,
        body: MessageIn,
        principal: ChatCaller,
        wait: Annotated[bool, Query()] = False,
        stream: Annotated[bool, Query()] = False,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=MAX_IDEMPOTENCY_KEY,
                pattern=r"^[\x21-\x7e]+$",
                description="Retrying with the same key (per session) returns the first "
                "acceptance instead of sending the message again.",
            ),
        ] = None,
    ) -> Response:
        if wait and stream:
            raise unprocessable("choose one of wait=true and stream=true")
        if ctx.closing.is_set():
            raise HTTPException(
                503, "the platform is shutting down; retry shortly",
                headers={"Retry-After": RETRY_AFTER_S},
            )  # fmt: skip
        tenant_id = principal.tenant_id
        found = await ctx.sessions.get(tenant_id, session_id)
        if found is None:
            raise not_found("session", session_id)
        session, agent = found
        if agent is None:
            raise conflict(f"the agent of session {session_id!r} no longer exists")
        if body.attachments:
            async with ctx.database.read() as uow:
                missing = [a for a in body.attachments if not await uow.uploads.get(tenant_id, a)]
            if missing:
                raise unprocessable(f"unknown upload(s): {', '.join(missing)}")
        decision = await ctx.policy.decide(
            PolicyInput(
                action="conversation.send",
                tenant=tenant_id,
                subject=Subject(principal.key_id, tuple(sorted(principal.scopes))),
                resource={"tenant_id": session.tenant_id, "session_id": session.id,
                          "agent_id": agent.id, "agent": agent.name},
                context={"content_chars": len(body.content)},
            )
        )  # fmt: skip
        if not decision.allow:
            raise HTTPException(403, f"policy denied conversation.send: {decision.reason}")
        metadata = {**body.metadata, "attachments": body.attachments} if body.attachments else (
            body.metadata
        )  # fmt: skip
        try:
            accepted = await accept_message(
                ctx.store, session, agent, body.content, metadata, idempotency_key
            )
        except ConflictError as exc:
            raise conflict(str(exc)) from None
        except NotFoundError:
            ctx.sessions.forget(tenant_id, session_id)
            raise not_found("session", session_id) from None
        run, fresh = accepted.run, not accepted.replayed
        if fresh:
            await publish(ctx.streams, run.id, accepted.events)
            ctx.metrics.accepted.inc()
        if stream:
            return StreamingResponse(
                run_stream(ctx.reader, tenant_id, run.id, 0, ctx.closing, fresh=fresh),
                media_type=SSE_MEDIA_TYPE,
                headers={**SSE_HEADERS, "X-Run-ID": run.id, "X-Message-ID": accepted.message.id},
            )
        ids = {"message_id": accepted.message.id, "run_id": run.id}
        if wait:
            timeout_s = agent.settings.run_timeout_s + WAIT_MARGIN_S
            finished = await _wait_finished(ctx, tenant_id, run.id, timeout_s, fresh)
            if finished is not None:
                return Response(orjson.dumps(finished), 200, media_type=JSON)
        return Response(orjson.dumps(ids), 202, {"Location": f"/v1/runs/{run.id}"}, media_type=JSON)

    return router


async def _wait_finished(
    ctx: RunsContext, tenant_id: str, run_id: str, timeout_s: float, fresh: bool
) -> dict[str, Any] | None:
    """`{run, message}` once the run is terminal; None when waiting ran out or the gateway
    drains (the caller then answers 202: the message is accepted either way)."""
    waiter = asyncio.ensure_future(ctx.reader.finished(tenant_id, run_id, fresh=fresh))
    closing = asyncio.ensure_future(ctx.closing.wait())
    try:
        done, _ = await asyncio.wait(
            {waiter, closing}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (waiter, closing):
            task.cancel()
    found = (await asyncio.gather(waiter, return_exceptions=True))[0]
    if waiter not in done or isinstance(found, BaseException) or found is None:
        if isinstance(found, Exception):
            # The message is accepted whatever happens to the waiting: answer with the 202.
            _log.warning("waiting for run %s failed: %s", run_id, found)
        return None
    run, reply = found
    return {"run": run_json(run), "message": None if reply is None else message_json(reply)}
