"""`/v1/responses` (the Open Responses shape): a response is a durable run of an agent.

`previous_response_id` continues that response's session; `background: true` answers at
once and the run goes on (poll `GET /v1/responses/{id}`, resume its stream with
`?stream=true&starting_after=N`, cancel it with `POST /v1/responses/{id}/cancel`).
`store: false` responses are not retrievable afterwards and cannot be continued.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import Field

from soma.core.errors import ConflictError, NotFoundError
from soma.doors.openai.chat import door_agent
from soma.doors.openai.errors import JSON, DoorError, OpenAIRoute, error_responses, unsupported
from soma.doors.openai.response_items import (
    DOOR,
    ResponseEvents,
    base_json,
    response_id,
    response_json,
    run_id_of,
)
from soma.doors.openai.turns import Said, said, split_turn, text_of
from soma.gateway.auth.deps import ChatCaller
from soma.gateway.auth.principal import Principal
from soma.gateway.conversation import Sent, Turn, send, start, wait_finished
from soma.gateway.runs_view import RunsContext
from soma.gateway.schemas.common import RequestBody
from soma.gateway.sse import SSE_HEADERS, SSE_MEDIA_TYPE, run_stream
from soma.runs.commands import Prior, cancel_run
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run

MAX_ITEMS = 1_000
RESUME = b": the server is shutting down; resume with GET /v1/responses/{id}?stream=true\n\n"


class ResponseIn(RequestBody):
    """The parameters honoured; any other answers 400 naming it."""

    model: str = Field(min_length=1, max_length=200, description="The agent's name.")
    input: str | list[dict[str, Any]] = Field(description="Text, or message items.")
    instructions: str | None = Field(default=None, max_length=100_000)
    previous_response_id: str | None = Field(default=None, max_length=100)
    store: bool = True
    background: bool = False
    stream: bool = False
    user: str | None = Field(default=None, max_length=200)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16
    )


def _items(value: str | list[dict[str, Any]]) -> list[Said]:
    if isinstance(value, str):
        return [said("user", value, "input")]
    if len(value) > MAX_ITEMS:
        raise DoorError(400, f"'input' holds more than {MAX_ITEMS} items", "input")
    items = []
    for index, item in enumerate(value):
        where = f"input[{index}]"
        kind = item.get("type", "message")
        if kind != "message":
            raise unsupported(f"{where}.type", f"'{kind}' items (only messages are)")
        extra = set(item) - {"type", "role", "content", "id", "status"}
        if extra:
            raise unsupported(f"{where}.{sorted(extra)[0]}")
        role = item.get("role")
        if not isinstance(role, str):
            raise DoorError(400, f"'{where}.role' must be a string", f"{where}.role")
        items.append(said(role, item.get("content"), where))
    return items


def responses_door(ctx: RunsContext) -> APIRouter:
    router = APIRouter(tags=["openai"], route_class=OpenAIRoute, responses=error_responses())

    async def _load(principal: Principal, rid: str) -> tuple[Run, list[Message], dict[str, Any]]:
        """A stored response of the caller's tenant: its run, messages and door metadata."""
        run_id = run_id_of(rid)
        run, messages = None, []
        if run_id is not None:
            async with ctx.database.read() as uow:
                run = await uow.runs.get(principal.tenant_id, run_id)
                if run is not None:
                    messages = await uow.messages.list_for_run(principal.tenant_id, run_id)
        question = next((m for m in messages if run and m.id == run.message_id), None)
        door = question.metadata.get("door_request") if question is not None else None
        if run is None or not isinstance(door, dict) or not door.get("store", True):
            raise DoorError(404, f"No response found with id '{rid}'", "response_id",
                            "not_found")  # fmt: skip
        return run, messages, door

    def _stream(principal: Principal, run: Run, door: dict[str, Any], after: int,
                fresh: bool) -> StreamingResponse:  # fmt: skip
        events = ResponseEvents(base_json(run, door), after)
        resume = RESUME.replace(b"{id}", response_id(run.id).encode())
        stream = run_stream(ctx.reader, principal.tenant_id, run.id, 0, ctx.closing,
                            fresh=fresh, render=events, resume=resume, retry=False)  # fmt: skip
        return StreamingResponse(
            stream, media_type=SSE_MEDIA_TYPE, headers={**SSE_HEADERS, "X-Run-ID": run.id}
        )

    async def _answer(principal: Principal, rid: str) -> Response:
        run, messages, door = await _load(principal, rid)
        return Response(orjson.dumps(response_json(run, messages, door)), media_type=JSON)

    @router.post(
        "/v1/responses",
        responses={200: {"description": "a `response`, or with `stream` its semantic events"}},
    )
    async def create_response(body: ResponseIn, principal: ChatCaller) -> Response:
        if body.background and not body.store:
            raise DoorError(400, "background responses must be stored", "store")
        agent = await door_agent(ctx, principal, body.model)
        prior, content = split_turn(_items(body.input), "input")
        door: dict[str, Any] = {
            "model": agent.name, "store": body.store, "background": body.background,
            "previous_response_id": body.previous_response_id,
            "instructions": body.instructions, "metadata": body.metadata or {},
            "user": body.user,
        }  # fmt: skip
        turn = Turn(content, {"door": DOOR, "door_request": door})
        sent: Sent
        if body.previous_response_id is not None:
            if body.instructions is not None:
                raise unsupported("instructions", "with previous_response_id (the "
                                  "conversation keeps its first instructions)")  # fmt: skip
            previous, _, _ = await _load(principal, body.previous_response_id)
            if previous.agent_id != agent.id:
                raise DoorError(400, "previous_response_id belongs to another model", "model")
            sent = await send(ctx, principal, previous.session_id, turn, prior)
        else:
            if body.instructions:
                prior.insert(0, Prior("system", text_of(body.instructions, "instructions")))
            seed = {"door": DOOR, **({"user": body.user} if body.user else {})}
            sent = await start(ctx, principal, agent, turn, prior, metadata=seed)
        run = sent.run
        if body.stream:
            return _stream(principal, run, door, -1, sent.fresh)
        if not body.background:
            await wait_finished(ctx, sent)
        async with ctx.database.read() as uow:
            stored = await uow.runs.get(principal.tenant_id, run.id) or run
            messages = await uow.messages.list_for_run(principal.tenant_id, run.id)
        return Response(orjson.dumps(response_json(stored, messages, door)), media_type=JSON)

    @router.get(
        "/v1/responses/{response_id}",
        responses={200: {"description": "the `response`, or with `stream` its events again"}},
    )
    async def get_response(
        response_id: str,
        principal: ChatCaller,
        stream: Annotated[bool, Query()] = False,
        starting_after: Annotated[int | None, Query(ge=-1)] = None,
    ) -> Response:
        if not stream:
            if starting_after is not None:
                raise unsupported("starting_after", "only with stream=true")
            return await _answer(principal, response_id)
        run, _, door = await _load(principal, response_id)
        return _stream(principal, run, door, -1 if starting_after is None else starting_after,
                       fresh=False)  # fmt: skip

    @router.post("/v1/responses/{response_id}/cancel")
    async def cancel_response(response_id: str, principal: ChatCaller) -> Response:
        run, _, _ = await _load(principal, response_id)
        try:
            await cancel_run(
                ctx.database, ctx.store, ctx.streams, ctx.flags, principal.tenant_id, run.id
            )
        except NotFoundError:
            raise DoorError(404, f"No response found with id '{response_id}'") from None
        except ConflictError as exc:
            raise DoorError(409, f"cannot cancel: {exc}", code="not_cancellable") from None
        return await _answer(principal, response_id)

    return router
