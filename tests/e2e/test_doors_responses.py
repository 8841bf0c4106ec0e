"""`/v1/responses` driven by the official `openai` client against the real process (issue 14)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e.stacks import FAST_CHUNKS, Api, Stack, Upstream, start_upstream
from tests.e2e.test_doors_openai import client
from tests.e2e.test_tools import agent, call, tools_env

pytestmark = pytest.mark.e2e


def slow_agent(api: Api) -> str:
    created = api.client.post(
        "/v1/agents", json={"name": "slowpoke", "instructions": "Be slow.", "model": "slow"}
    )
    assert created.status_code == 201, created.text
    return "slowpoke"


def wait_status(oa: openai.OpenAI, response_id: str, statuses: set[str]) -> Any:
    deadline = time.monotonic() + 60
    while True:
        response = oa.responses.retrieve(response_id)
        if response.status in statuses:
            return response
        assert time.monotonic() < deadline, f"{response_id} still {response.status}"
        time.sleep(0.1)


def test_a_response_then_one_that_continues_it(stack: Stack) -> None:
    platform = stack.launch()
    oa = client(platform, stack.admin_key)
    first = oa.responses.create(model="assistant", input="hello there", metadata={"k": "v"})
    assert first.object == "response" and first.status == "completed"
    assert first.id.startswith("resp_") and first.model == "assistant"
    assert first.output_text == "You said: hello there"
    assert first.usage is not None and first.usage.output_tokens > 0
    assert first.metadata == {"k": "v"}
    second = oa.responses.create(
        model="assistant",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "and again"}]}],
        previous_response_id=first.id,
    )
    assert second.output_text == "You said: and again"
    assert second.previous_response_id == first.id
    api = Api(platform, stack.admin_key)
    runs = [api.run(r.id.removeprefix("resp_")) for r in (first, second)]
    assert runs[0]["session_id"] == runs[1]["session_id"]
    contents = [m["content"] for m in api.messages(runs[0]["session_id"])]
    assert contents == ["hello there", "You said: hello there", "and again", "You said: and again"]
    assert oa.responses.retrieve(first.id).output_text == "You said: hello there"


def test_a_streamed_response_has_the_semantic_events(stack: Stack) -> None:
    platform = stack.launch()
    oa = client(platform, stack.admin_key)
    events = list(oa.responses.create(model="assistant", input="stream me", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for kind in ("response.output_item.added", "response.content_part.added",
                 "response.output_text.done", "response.output_item.done"):  # fmt: skip
        assert kind in kinds
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == FAST_CHUNKS and "".join(deltas) == "You said: stream me"
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers))
    final = events[-1].response
    assert final.status == "completed" and final.output_text == "You said: stream me"
    assert final.usage is not None and final.usage.total_tokens > 0


def test_a_background_response_is_polled_resumed_and_cancelled(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    oa = client(platform, stack.admin_key)
    agent = slow_agent(api)
    started = oa.responses.create(model=agent, input="take your time", background=True)
    assert started.background is True and started.status in ("queued", "in_progress")
    # The stream is read a little, left, and resumed after the last number seen.
    with oa.responses.retrieve(started.id, stream=True) as stream:
        seen = []
        for event in stream:
            seen.append(event)
            if event.type == "response.output_text.delta" and len(seen) > 6:
                break
    last = seen[-1].sequence_number
    resumed = list(oa.responses.retrieve(started.id, stream=True, starting_after=last))
    assert resumed[0].sequence_number > last
    assert resumed[-1].type == "response.completed"
    text = "".join(e.delta for e in [*seen, *resumed] if e.type == "response.output_text.delta")
    assert text == resumed[-1].response.output_text == "You said: take your time"
    done = wait_status(oa, started.id, {"completed"})
    assert done.output_text == text
    # A second one is cancelled while it runs.
    doomed = oa.responses.create(model=agent, input="never mind", background=True)
    wait_status(oa, doomed.id, {"in_progress"})
    oa.responses.cancel(doomed.id)
    assert wait_status(oa, doomed.id, {"cancelled"}).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        oa.responses.cancel(doomed.id)


def test_response_errors_are_typed(embedded: Stack) -> None:
    platform = embedded.launch()
    oa = client(platform, embedded.admin_key)
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve("resp_nothing")
    with pytest.raises(openai.BadRequestError) as tools:
        oa.responses.create(model="assistant", input="x", temperature=0.5)
    assert tools.value.param == "temperature"
    with pytest.raises(openai.BadRequestError):
        oa.responses.create(model="assistant", input="x", background=True, store=False)
    unstored = oa.responses.create(model="assistant", input="forget me", store=False)
    assert unstored.output_text == "You said: forget me"
    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError):
        oa.responses.create(model="assistant", input="x", previous_response_id=unstored.id)


def test_kill_9_during_a_background_response_it_completes_and_its_stream_resumes(
    stack: Stack,
) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    oa = client(platform, stack.admin_key)
    started = oa.responses.create(model=slow_agent(api), input="survive this", background=True)
    seen = []
    with oa.responses.retrieve(started.id, stream=True) as stream:
        for event in stream:
            seen.append(event)
            if event.type == "response.output_text.delta":
                break
    platform.process.send_signal(signal.SIGKILL)
    platform.process.wait(timeout=10)
    restarted = stack.launch()
    oa = client(restarted, stack.admin_key)
    last = seen[-1].sequence_number
    resumed = list(oa.responses.retrieve(started.id, stream=True, starting_after=last))
    assert resumed and all(e.sequence_number > last for e in resumed)
    assert resumed[-1].type == "response.completed"
    assert resumed[-1].response.output_text == "You said: survive this"
    # The retried attempt's text arrives as a new output item, numbered after the first's.
    assert [e.type for e in resumed].count("response.in_progress") == 1
    done = wait_status(oa, started.id, {"completed"})
    assert done.output_text == "You said: survive this"
    assert Api(restarted, stack.admin_key).run(started.id.removeprefix("resp_"))["attempt"] == 2


@pytest.fixture(scope="module")
def tool_model() -> Iterator[Upstream]:
    """The scripted upstream in `--tools` mode: `call [[name, args]]` makes it call them."""
    upstream = start_upstream("--tools")
    yield upstream
    upstream.process.terminate()
    upstream.process.wait(timeout=10)


def test_server_side_tool_calls_are_output_items(embedded: Stack, tool_model: Upstream) -> None:
    platform = embedded.launch(tools_env(tool_model))
    api = Api(platform, embedded.admin_key)
    oa = client(platform, embedded.admin_key)
    name = agent(api, "filer", ["files"])
    content = call(("files", {"op": "write", "path": "note.txt", "content": "kept"}))
    streamed = list(oa.responses.create(model=name, input=content, stream=True))
    final = streamed[-1].response
    assert final.status == "completed"
    kinds = [item.type for item in final.output]
    assert kinds[:2] == ["function_call", "function_call_output"] and kinds[-1] == "message"
    assert final.output[0].name == "files"
    assert final.output[0].call_id == final.output[1].call_id
    added = [e.item.type for e in streamed if e.type == "response.output_item.added"]
    assert added[:2] == ["function_call", "function_call_output"]
    polled = oa.responses.retrieve(final.id)
    assert [item.type for item in polled.output] == kinds
    assert polled.output[0].call_id == final.output[0].call_id
