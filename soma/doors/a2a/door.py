"""A2A 1.0 door: Agent Cards and the JSON-RPC binding over durable runs.

Each agent of the caller's tenant answers at `/a2a/agents/{name}` (JSON-RPC) with its card at
`/a2a/agents/{name}/.well-known/agent-card.json`; the platform's card, open to anyone, is at
`/.well-known/agent-card.json` and points at the tenant's `assistant`. A task is a run and a
context is a session: `SendMessage` without a `contextId` starts a session, with one continues
it. Messages go through the same command as the native API (policy, limits, transaction).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from soma.core.errors import ConflictError, NotFoundError
from soma.doors.a2a.events import TaskEvents
from soma.doors.a2a.wire import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    STATUSES_OF,
    TASK_NOT_CANCELABLE,
    TASK_NOT_FOUND,
    RpcError,
    card_json,
    error,
    result,
    task_json,
)
from soma.gateway.auth.deps import ChatCaller
from soma.gateway.auth.principal import Principal
from soma.gateway.conversation import Sent, Turn, send, start, wait_finished
from soma.gateway.problems import not_found
from soma.gateway.runs_view import RunsContext
from soma.gateway.sse import SSE_HEADERS, SSE_MEDIA_TYPE, run_stream
from soma.runs.commands import cancel_run
from soma.storage.repositories.agents import Agent
from soma.storage.repositories.runs import Run

DOOR = "a2a"
JSON = "application/json"
MAX_PAGE = 100
DEFAULT_PAGE = 50
MAX_TEXT = 100_000
_HTTP_CODES = {400: INVALID_PARAMS, 404: TASK_NOT_FOUND, 409: INVALID_REQUEST, 422: INVALID_PARAMS}


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type=JSON)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _message(params: dict[str, Any]) -> dict[str, Any]:
    message = params.get("message")
    if not isinstance(message, dict):
        raise RpcError(INVALID_PARAMS, "params.message must be an object")
    return message


def _text(message: dict[str, Any]) -> str:
    parts = message.get("parts")
    if not isinstance(parts, list) or not parts:
        raise RpcError(INVALID_PARAMS, "params.message.parts must be a non-empty list")
    texts = []
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise RpcError(INVALID_PARAMS, "only text parts are supported")
        texts.append(part["text"])
    text = "".join(texts)
    if not text.strip() or len(text) > MAX_TEXT:
        raise RpcError(INVALID_PARAMS, f"the message text must hold 1 to {MAX_TEXT} characters")
    return text


def _optional_str(params: dict[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is not None and (not isinstance(value, str) or not value or len(value) > 200):
        raise RpcError(INVALID_PARAMS, f"{key} must be a non-empty string")
    return value


def _int(params: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RpcError(INVALID_PARAMS, f"{key} must be an integer from {low} to {high}")
    return value


def a2a_card_router() -> APIRouter:
    """The platform's public card: no key needed to learn how to talk to it."""
    router = APIRouter(tags=["a2a"])

    @router.get("/.well-known/agent-card.json")
    async def platform_card(request: Request) -> dict[str, Any]:
        return card_json(_base_url(request), None)

    return router


def a2a_door(ctx: RunsContext) -> APIRouter:
    router = APIRouter(tags=["a2a"])

    async def agent_of(principal: Principal, name: str) -> Agent:
        agent = await ctx.agents.get(principal.tenant_id, name)
        if agent is None:
            raise not_found("agent", name)
        return agent

    async def load(principal: Principal, agent: Agent, task_id: Any) -> tuple[Run, list[Any]]:
        if not isinstance(task_id, str) or not task_id:
            raise RpcError(INVALID_PARAMS, "id must be a task id")
        async with ctx.database.read() as uow:
            run = await uow.runs.get(principal.tenant_id, task_id)
            messages = [] if run is None else await uow.messages.list_for_run(
                principal.tenant_id, task_id
            )  # fmt: skip
        if run is None or run.agent_id != agent.id:
            raise RpcError(TASK_NOT_FOUND, f"task {task_id} not found")
        return run, messages

    async def task(principal: Principal, agent: Agent, task_id: Any, history: int | None) -> Any:
        run, messages = await load(principal, agent, task_id)
        return task_json(run, messages, history)

    async def send_message(principal: Principal, agent: Agent, params: dict[str, Any]) -> Sent:
        message = _message(params)
        content = _text(message)
        context_id = _optional_str(message, "contextId")
        task_id = _optional_str(message, "taskId")
        message_id = _optional_str(message, "messageId")
        if task_id is not None:
            earlier, _ = await load(principal, agent, task_id)
            if context_id is not None and context_id != earlier.session_id:
                raise RpcError(INVALID_PARAMS, "taskId belongs to another context")
            context_id = earlier.session_id
        turn = Turn(content, {"door": DOOR, **({"a2a_message_id": message_id} if message_id
                                                else {})}, idempotency_key=message_id)  # fmt: skip
        if context_id is None:
            return await start(ctx, principal, agent, turn, metadata={"door": DOOR})
        found = await ctx.sessions.get(principal.tenant_id, context_id)
        if found is None:
            raise RpcError(TASK_NOT_FOUND, f"context {context_id} not found")
        if found[1] is None or found[1].id != agent.id:
            raise RpcError(INVALID_PARAMS, f"context {context_id} belongs to another agent")
        return await send(ctx, principal, context_id, turn)

    def stream(principal: Principal, request_id: Any, run: Run, fresh: bool) -> Response:
        events = TaskEvents(request_id, run.id, run.session_id)
        body = run_stream(ctx.reader, principal.tenant_id, run.id, 0, ctx.closing, fresh=fresh,
                          render=events, retry=False)  # fmt: skip
        return StreamingResponse(body, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)

    async def list_tasks(principal: Principal, agent: Agent, params: dict[str, Any]) -> Any:
        size = _int(params, "pageSize", 1, MAX_PAGE) or DEFAULT_PAGE
        history = _int(params, "historyLength", 0, 1_000) or 0
        state = params.get("status")
        statuses = None
        if state not in (None, "", "TASK_STATE_UNSPECIFIED"):
            if state not in STATUSES_OF:
                raise RpcError(INVALID_PARAMS, f"unknown status {state!r}")
            statuses = STATUSES_OF[state]
        context_id = _optional_str(params, "contextId")
        token = params.get("pageToken") or None
        async with ctx.database.read() as uow:
            try:
                runs, next_token = await uow.runs.list(
                    principal.tenant_id, size, token if isinstance(token, str) else None,
                    session_id=context_id, statuses=statuses,
                )  # fmt: skip
            except ValueError:
                raise RpcError(INVALID_PARAMS, "invalid pageToken") from None
            mine = [run for run in runs if run.agent_id == agent.id]
            tasks = []
            for run in mine:
                messages = await uow.messages.list_for_run(principal.tenant_id, run.id)
                body = task_json(run, messages, history)
                if not params.get("includeArtifacts"):
                    body.pop("artifacts", None)
                tasks.append(body)
        return {"tasks": tasks, "nextPageToken": next_token or "", "pageSize": size,
                "totalSize": len(tasks)}  # fmt: skip

    @router.get("/a2a/agents/{name}/.well-known/agent-card.json")
    async def agent_card(name: str, request: Request, principal: ChatCaller) -> dict[str, Any]:
        return card_json(_base_url(request), await agent_of(principal, name))

    @router.post("/a2a/agents/{name}", include_in_schema=False)
    async def rpc(name: str, request: Request, principal: ChatCaller) -> Response:
        agent = await agent_of(principal, name)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _json(error(None, PARSE_ERROR, "the body is not JSON"))
        request_id = body.get("id") if isinstance(body, dict) else None
        try:
            return await dispatch(principal, agent, body, request_id)
        except RpcError as exc:
            return _json(error(request_id, exc.code, exc.message))
        except HTTPException as exc:
            code = _HTTP_CODES.get(exc.status_code, INTERNAL_ERROR)
            return _json(error(request_id, code, str(exc.detail)))

    async def dispatch(principal: Principal, agent: Agent, body: Any, rid: Any) -> Response:
        if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
            raise RpcError(INVALID_REQUEST, "not a JSON-RPC 2.0 request")
        method, params = body.get("method"), body.get("params", {})
        if not isinstance(method, str):
            raise RpcError(INVALID_REQUEST, "method must be a string")
        if not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, "params must be an object")
        if method in ("SendMessage", "SendStreamingMessage"):
            sent = await send_message(principal, agent, params)
            if method == "SendStreamingMessage":
                return stream(principal, rid, sent.run, sent.fresh)
            configuration = params.get("configuration") or {}
            if not (isinstance(configuration, dict) and configuration.get("returnImmediately")):
                await wait_finished(ctx, sent)
            history = _int(configuration, "historyLength", 0, 1_000) if isinstance(
                configuration, dict) else None  # fmt: skip
            found = await task(principal, agent, sent.run.id, history)
            return _json(result(rid, {"task": found}))
        if method == "GetTask":
            history = _int(params, "historyLength", 0, 1_000)
            return _json(result(rid, await task(principal, agent, params.get("id"), history)))
        if method == "ListTasks":
            return _json(result(rid, await list_tasks(principal, agent, params)))
        if method == "CancelTask":
            run, _ = await load(principal, agent, params.get("id"))
            try:
                await cancel_run(
                    ctx.database, ctx.store, ctx.streams, ctx.flags, principal.tenant_id, run.id
                )
            except NotFoundError:
                raise RpcError(TASK_NOT_FOUND, f"task {run.id} not found") from None
            except ConflictError as exc:
                raise RpcError(TASK_NOT_CANCELABLE, str(exc)) from None
            return _json(result(rid, await task(principal, agent, run.id, None)))
        if method == "SubscribeToTask":
            run, _ = await load(principal, agent, params.get("id"))
            return stream(principal, rid, run, fresh=False)
        raise RpcError(METHOD_NOT_FOUND, f"method {method!r} is not supported")

    return router
