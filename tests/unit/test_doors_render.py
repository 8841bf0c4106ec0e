"""The doors' renderings of run events: numbering, resuming, retries (issue 14)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from soma.doors.a2a.events import TaskEvents
from soma.doors.openai.chunks import DONE, ChatChunks
from soma.doors.openai.response_items import ResponseEvents
from soma.gateway.directory import AgentNames
from soma.runs.events import EventType, RunEvent
from soma.storage.repositories.agents import Agent

RUN = "r1"
BASE = {"id": f"resp_{RUN}", "object": "response", "model": "assistant"}


def events(*texts: str, attempt: int = 1) -> list[RunEvent]:
    first = attempt * 1_000_000 + 1
    out = [RunEvent(first, EventType.STARTED, {"attempt": attempt})]
    for offset, text in enumerate(texts, start=1):
        out.append(RunEvent(first + offset, EventType.DELTA, {"text": text}))
    n = first + len(texts) + 1
    message = {"content": "".join(texts)}
    out += [RunEvent(n, EventType.MESSAGE_COMPLETED, {"message": message}),
            RunEvent(n + 1, EventType.COMPLETED, {"usage": {"prompt_tokens": 2,
                                                            "completion_tokens": 3}})]  # fmt: skip
    return out


def parse(stream: bytes) -> list[dict[str, Any]]:
    frames = [f for f in stream.split(b"\n\n") if f]
    return [orjson.loads(f.split(b"data: ", 1)[1]) for f in frames if b"[DONE]" not in f]


def render(renderer: Any, run: list[RunEvent]) -> bytes:
    return b"".join(renderer(event) for event in run)


def test_response_events_are_numbered_alike_on_every_replay() -> None:
    run = [RunEvent(1, EventType.QUEUED, {}), *events("He", "llo")]
    whole = parse(render(ResponseEvents(BASE), run))
    numbers = [e["sequence_number"] for e in whole]
    assert numbers == sorted(set(numbers))
    assert whole[0]["type"] == "response.created" and whole[-1]["type"] == "response.completed"
    assert whole[-1]["response"]["output"][0]["content"][0]["text"] == "Hello"
    assert whole[-1]["response"]["usage"]["total_tokens"] == 5
    cut = numbers[4]
    resumed = parse(render(ResponseEvents(BASE, after=cut), run))
    assert resumed == [e for e in whole if e["sequence_number"] > cut]


def test_a_retried_attempt_leaves_the_partial_text_out() -> None:
    run = [RunEvent(1, EventType.QUEUED, {}), *events("Y")[:2], *events("Yes", attempt=2)]
    final = parse(render(ResponseEvents(BASE), run))[-1]["response"]
    texts = [c["text"] for item in final["output"] for c in item["content"]]
    assert texts == ["Yes"]
    assert final["output"][0]["status"] == "incomplete"


def test_a_reply_without_deltas_still_arrives_whole() -> None:
    run = [RunEvent(1, EventType.QUEUED, {}), *events("all at once")]
    run = [e for e in run if e.type != EventType.DELTA]
    response_stream = parse(render(ResponseEvents(BASE), run))
    deltas = [e["delta"] for e in response_stream if e["type"] == "response.output_text.delta"]
    assert deltas == ["all at once"]
    chunks = parse(render(ChatChunks(RUN, "assistant", 0, include_usage=False), run))
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "all at once", None]


def test_chat_chunks_end_with_done_or_an_error() -> None:
    run = [RunEvent(1, EventType.QUEUED, {}), *events("a", "b")]
    stream = render(ChatChunks(RUN, "assistant", 0, include_usage=True), run)
    assert stream.endswith(DONE)
    chunks = parse(stream)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5
    failed = [RunEvent(1, EventType.QUEUED, {}), RunEvent(2, EventType.FAILED, {"error": "x"})]
    failing = render(ChatChunks(RUN, "assistant", 0, include_usage=False), failed)
    assert DONE not in failing and parse(failing)[-1]["error"]["code"] == "run_failed"


def test_task_events_append_then_replace_the_reply() -> None:
    run = [RunEvent(1, EventType.QUEUED, {}), *events("a", "b")]
    updates = [e["result"] for e in parse(render(TaskEvents(7, RUN, "s1"), run))]
    assert updates[0]["task"]["status"]["state"] == "TASK_STATE_SUBMITTED"
    artifacts = [u["artifactUpdate"] for u in updates if "artifactUpdate" in u]
    assert [(a["append"], a["lastChunk"]) for a in artifacts] == [
        (False, False), (True, False), (False, True)
    ]  # fmt: skip
    assert artifacts[-1]["artifact"]["parts"] == [{"text": "ab"}]
    assert updates[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"


@pytest.mark.asyncio
async def test_agent_names_are_cached_for_their_ttl_only() -> None:
    calls: list[str] = []
    now = [0.0]
    agent = Agent.__new__(Agent)

    async def lookup(tenant_id: str, name: str) -> Agent | None:
        calls.append(name)
        return agent if name == "known" else None

    names = AgentNames(lookup, ttl_s=10, clock=lambda: now[0])
    assert await names.get("t", "known") is agent
    assert await names.get("t", "known") is agent
    assert await names.get("t", "unknown") is None
    assert await names.get("t", "unknown") is None
    now[0] = 11
    assert await names.get("t", "known") is agent
    assert calls == ["known", "unknown", "unknown", "known"]


def test_a_chat_stream_retried_after_text_ends_with_an_error() -> None:
    run = [RunEvent(1, EventType.QUEUED, {}), *events("Y")[:2], *events("Yes", attempt=2)]
    stream = render(ChatChunks(RUN, "assistant", 0, include_usage=False), run)
    chunks = parse(stream)
    assert chunks[-1]["error"]["code"] == "run_retried"
    assert DONE not in stream and b"Yes" not in stream
