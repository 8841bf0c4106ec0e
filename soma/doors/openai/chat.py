"""`GET /v1/models` and `POST /v1/chat/completions`: the caller's agents as OpenAI models.

A completion is one durable run of the agent named by `model`. Stateless by default: the
request's earlier messages seed a new session and its last user message is the run's turn.
Extension: the header `X-Soma-Session-Id` binds the request to an existing session of that
agent instead; the session holds the history, so only the last message is sent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from soma.doors.openai.chunks import ChatChunks, completion_json
from soma.doors.openai.errors import (
    JSON,
    NO_RETRY,
    DoorError,
    OpenAIRoute,
    error_responses,
    unsupported,
)
from soma.doors.openai.turns import Said, said, split_turn
from soma.gateway.auth.deps import ChatCaller
from soma.gateway.auth.principal import Principal
from soma.gateway.conversation import Sent, Turn, send, start, wait_finished
from soma.gateway.runs_view import RunsContext
from soma.gateway.schemas.common import RequestBody
from soma.gateway.sse import SSE_HEADERS, SSE_MEDIA_TYPE, run_stream
from soma.runs.events import RunStatus
from soma.storage.repositories.agents import Agent
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run

DOOR = "chat.completions"
MAX_MESSAGES = 1_000
MAX_MODELS = 1_000
SESSION_HEADER = "X-Soma-Session-Id"
RESUME = b": the server is shutting down; the run goes on: GET /v1/runs/{id} has its result\n\n"


class StreamOptions(RequestBody):
    include_usage: bool = False


class ChatMessageIn(RequestBody):
    role: str = Field(max_length=32)
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(default=None, max_length=200)
    tool_calls: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, max_length=200)


class ChatCompletionIn(RequestBody):
    """The parameters honoured; any other OpenAI parameter answers 400 naming it."""

    model: str = Field(min_length=1, max_length=200, description="The agent's name.")
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    user: str | None = Field(default=None, max_length=200)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16
    )


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


def _model(agent: Agent) -> ModelOut:
    return ModelOut(id=agent.name, created=int(agent.created_at.timestamp()), owned_by="soma")


async def door_agent(ctx: RunsContext, principal: Principal, name: str) -> Agent:
    """The caller's agent named by `model`; OpenAI's 404 `model_not_found` otherwise."""
    agent = await ctx.agents.get(principal.tenant_id, name)
    if agent is None:
        raise DoorError(404, f"The model '{name}' does not exist", "model", "model_not_found")
    return agent


def finished_answer(found: tuple[Run, Message | None] | None, run_id: str) -> Run:
    """The ended run of a completion, or the error that says why there is no answer."""
    if found is None:
        raise DoorError(504, f"run {run_id} did not finish in time; GET /v1/runs/{run_id} "
                        "has its result", code="timeout", headers=NO_RETRY)  # fmt: skip
    run = found[0]
    if run.status == RunStatus.FAILED:
        raise DoorError(500, f"the agent's run failed: {run.error}", code="run_failed",
                        headers=NO_RETRY)  # fmt: skip
    if run.status == RunStatus.CANCELLED:
        raise DoorError(409, "the agent's run was cancelled", code="run_cancelled",
                        headers=NO_RETRY)  # fmt: skip
    return run


def _said(message: ChatMessageIn, index: int) -> Said:
    where = f"messages[{index}]"
    spoken = said(message.role, message.content, where)
    if message.tool_calls:
        # Client-side tools: the agent's own tools run on the server.
        raise unsupported(f"{where}.tool_calls", "client-side tools are not supported")
    return spoken


def chat_door(ctx: RunsContext) -> APIRouter:
    router = APIRouter(tags=["openai"], route_class=OpenAIRoute, responses=error_responses())

    @router.get("/v1/models", response_model=ModelList)
    async def list_models(principal: ChatCaller) -> ModelList:
        agents: list[Agent] = []
        cursor = None
        async with ctx.database.read() as uow:
            while len(agents) < MAX_MODELS:
                page, cursor = await uow.agents.list(principal.tenant_id, 200, cursor)
                agents.extend(page)
                if cursor is None:
                    break
        return ModelList(data=[_model(agent) for agent in agents])

    @router.get("/v1/models/{model}", response_model=ModelOut)
    async def get_model(model: str, principal: ChatCaller) -> ModelOut:
        return _model(await door_agent(ctx, principal, model))

    @router.post(
        "/v1/chat/completions",
        responses={200: {"description": "a `chat.completion`, or with `stream` its chunks "
                         "as server-sent events ending with `data: [DONE]`"}},
    )  # fmt: skip
    async def create_completion(
        body: ChatCompletionIn,
        principal: ChatCaller,
        session_id: Annotated[
            str | None,
            Header(alias=SESSION_HEADER, min_length=1, max_length=100,
                   description="Extension: continue this session (it holds the history)."),
        ] = None,
    ) -> Response:  # fmt: skip
        if body.stream_options is not None and not body.stream:
            raise unsupported("stream_options", "only with stream: true")
        agent = await door_agent(ctx, principal, body.model)
        messages = [said(m.role, m.content, f"messages[{i}]") for i, m in enumerate(body.messages)]
        prior, content = split_turn(messages, "messages")
        meta: dict[str, Any] = {"door": DOOR}
        if body.metadata:
            meta["metadata"] = body.metadata
        turn = Turn(content, meta)
        sent: Sent
        if session_id is not None:
            found = await ctx.sessions.get(principal.tenant_id, session_id)
            if found is not None and (found[1] is None or found[1].id != agent.id):
                raise DoorError(400, f"session {session_id!r} is not a session of model "
                                f"{body.model!r}", "model")  # fmt: skip
            sent = await send(ctx, principal, session_id, turn)
        else:
            seed = {"door": DOOR, **({"user": body.user} if body.user else {})}
            sent = await start(ctx, principal, agent, turn, prior, metadata=seed)
        run = sent.run
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            chunks = ChatChunks(run.id, agent.name, int(run.created_at.timestamp()), include_usage)
            stream = run_stream(ctx.reader, principal.tenant_id, run.id, 0, ctx.closing,
                                fresh=sent.fresh, render=chunks, retry=False,
                                resume=RESUME.replace(b"{id}", run.id.encode()))  # fmt: skip
            return StreamingResponse(
                stream, media_type=SSE_MEDIA_TYPE, headers={**SSE_HEADERS, "X-Run-ID": run.id}
            )
        found_run = await wait_finished(ctx, sent)
        ended = finished_answer(found_run, run.id)
        reply = None if found_run is None else found_run[1]
        body_out = orjson.dumps(completion_json(ended, reply, agent.name))
        return Response(body_out, 200, headers={"X-Run-ID": run.id}, media_type=JSON)

    return router
