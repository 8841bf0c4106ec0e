"""The A2A door driven by the `a2a-sdk` client against the real process (issue 14)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError

from tests.e2e.platform import Platform
from tests.e2e.stacks import FAST_CHUNKS, Api, Stack
from tests.e2e.test_doors_openai import other_tenant_key
from tests.e2e.test_doors_responses import slow_agent

pytestmark = pytest.mark.e2e


def message(text: str, context_id: str = "") -> SendMessageRequest:
    said = Message(
        message_id=uuid.uuid4().hex, role="ROLE_USER", parts=[Part(text=text)],
        context_id=context_id,
    )  # fmt: skip
    return SendMessageRequest(message=said)


def http(platform: Platform, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)


async def connect(platform: Platform, key: str, agent: str, streaming: bool) -> object:
    factory = ClientFactory(ClientConfig(streaming=streaming, httpx_client=http(platform, key)))
    return await factory.create_from_url(f"{platform.base_url}/a2a/agents/{agent}")


async def collect(stream: object) -> list[StreamResponse]:
    return [event async for event in stream]  # type: ignore[attr-defined]


def test_card_send_stream_get_list_cancel(stack: Stack) -> None:
    platform = stack.launch()
    key = stack.admin_key
    api = Api(platform, key)
    agent = slow_agent(api)
    card = httpx.get(f"{platform.base_url}/.well-known/agent-card.json").json()
    assert card["supportedInterfaces"][0]["url"] == f"{platform.base_url}/a2a/agents/assistant"
    assert card["securitySchemes"]["apiKey"]["httpAuthSecurityScheme"]["scheme"] == "bearer"
    assert card["skills"] and card["capabilities"]["streaming"] is True

    async def scenario() -> None:
        blocking = await connect(platform, key, "assistant", streaming=False)
        answered = await collect(blocking.send_message(message("hello there")))  # type: ignore[attr-defined]
        task = answered[0].task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task.artifacts[0].parts[0].text == "You said: hello there"
        follow = await collect(blocking.send_message(message("again", task.context_id)))  # type: ignore[attr-defined]
        assert follow[0].task.context_id == task.context_id
        got = await blocking.get_task(GetTaskRequest(id=task.id))  # type: ignore[attr-defined]
        assert [m.parts[0].text for m in got.history] == ["hello there", "You said: hello there"]

        streaming = await connect(platform, key, "assistant", streaming=True)
        events = await collect(streaming.send_message(message("stream me")))  # type: ignore[attr-defined]
        assert events[0].HasField("task")
        chunks = [e.artifact_update for e in events if e.HasField("artifact_update")]
        assert len(chunks) == FAST_CHUNKS + 1 and chunks[-1].last_chunk
        assert chunks[-1].artifact.parts[0].text == "You said: stream me"
        states = [e.status_update.status.state for e in events if e.HasField("status_update")]
        assert states == [TaskState.TASK_STATE_WORKING, TaskState.TASK_STATE_COMPLETED]

        listed = await blocking.list_tasks(ListTasksRequest(context_id=task.context_id))  # type: ignore[attr-defined]
        assert {t.id for t in listed.tasks} == {task.id, follow[0].task.id}

        slow = await connect(platform, key, agent, streaming=False)
        request = message("take your time")
        request.configuration.return_immediately = True
        started = (await collect(slow.send_message(request)))[0].task  # type: ignore[attr-defined]
        assert started.status.state in (TaskState.TASK_STATE_SUBMITTED,
                                        TaskState.TASK_STATE_WORKING)  # fmt: skip
        cancelled = await slow.cancel_task(CancelTaskRequest(id=started.id))  # type: ignore[attr-defined]
        assert cancelled.status.state in (TaskState.TASK_STATE_CANCELED,
                                          TaskState.TASK_STATE_WORKING)  # fmt: skip
        for _ in range(200):
            final = await slow.get_task(GetTaskRequest(id=started.id))  # type: ignore[attr-defined]
            if final.status.state == TaskState.TASK_STATE_CANCELED:
                break
            await asyncio.sleep(0.05)
        assert final.status.state == TaskState.TASK_STATE_CANCELED
        with pytest.raises(TaskNotCancelableError):
            await slow.cancel_task(CancelTaskRequest(id=started.id))  # type: ignore[attr-defined]

        other = other_tenant_key(api)
        async with http(platform, other) as stranger:
            card_there = await stranger.get(
                f"{platform.base_url}/a2a/agents/{agent}/.well-known/agent-card.json"
            )
            assert card_there.status_code == 404
        theirs = await connect(platform, other, "assistant", streaming=False)
        with pytest.raises(TaskNotFoundError):
            await theirs.get_task(GetTaskRequest(id=task.id))  # type: ignore[attr-defined]
        with pytest.raises(TaskNotFoundError):
            await theirs.cancel_task(CancelTaskRequest(id=task.id))  # type: ignore[attr-defined]
        none = await theirs.list_tasks(ListTasksRequest())  # type: ignore[attr-defined]
        assert task.id not in {t.id for t in none.tasks}

    asyncio.run(scenario())
