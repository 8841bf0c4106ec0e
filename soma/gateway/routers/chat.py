"""`POST /v1/sessions/{id}/messages`: accept a message as a durable run (ARCHITECTURE §6, §9)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from soma.gateway.auth.deps import ChatCaller
from soma.gateway.auth.principal import Principal
from soma.gateway.conversation import Turn, send, wait_finished
from soma.gateway.json_route import JsonRoute
from soma.gateway.problems import unprocessable
from soma.gateway.runs_view import RunsContext
from soma.gateway.schemas.common import Metadata, RequestBody
from soma.gateway.sse import SSE_HEADERS, SSE_MEDIA_TYPE, run_stream
from soma.runs.views import message_json, run_json

MAX_CONTENT_CHARS = 100_000
MAX_IDEMPOTENCY_KEY = 200
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"
MESSAGES_PATH = "/v1/sessions/{session_id}/messages"
JSON = "application/json"


class MessageIn(RequestBody):
    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    attachments: list[str] = Field(default_factory=list, max_length=20)
    metadata: Metadata = Field(default_factory=dict)


class Accepted(BaseModel):
    message_id: str
    run_id: str


class MessagePost:
    """What `POST …/messages` does with valid input: shared by its FastAPI route and by
    `soma.gateway.fast_message`, which serves the plain requests without dependency solving."""

    def __init__(self, ctx: RunsContext) -> None:
        self._ctx = ctx

    async def __call__(
        self,
        principal: Principal,
        session_id: str,
        body: MessageIn,
        *,
        wait: bool,
        stream: bool,
        idempotency_key: str | None,
    ) -> Response:
        if wait and stream:
            raise unprocessable("choose one of wait=true and stream=true")
        ctx = self._ctx
        turn = Turn(body.content, body.metadata, body.attachments, idempotency_key)
        sent = await send(ctx, principal, session_id, turn)
        run, fresh = sent.run, sent.fresh
        if stream:
            return StreamingResponse(
                run_stream(ctx.reader, principal.tenant_id, run.id, 0, ctx.closing, fresh=fresh),
                media_type=SSE_MEDIA_TYPE,
                headers={**SSE_HEADERS, "X-Run-ID": run.id,
                         "X-Message-ID": sent.accepted.message.id},
            )  # fmt: skip
        ids = {"message_id": sent.accepted.message.id, "run_id": run.id}
        if wait:
            finished = await wait_finished(ctx, sent)
            if finished is not None:
                done, reply = finished
                body_out = {"run": run_json(done),
                            "message": None if reply is None else message_json(reply)}  # fmt: skip
                return Response(orjson.dumps(body_out), 200, media_type=JSON)
        return Response(orjson.dumps(ids), 202, {"Location": f"/v1/runs/{run.id}"}, media_type=JSON)


def chat_router(post: MessagePost) -> APIRouter:
    router = APIRouter(tags=["chat"], route_class=JsonRoute)

    @router.post(
        MESSAGES_PATH,
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
                pattern=IDEMPOTENCY_KEY_PATTERN,
                description="Retrying with the same key (per session) returns the first "
                "acceptance instead of sending the message again.",
            ),
        ] = None,
    ) -> Response:
        return await post(
            principal, session_id, body, wait=wait, stream=stream, idempotency_key=idempotency_key
        )

    return router
