"""Runs that fail: the agent's run timeout, a failing upstream, and a fallback that saves it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from soma.runs.events import TERMINAL, EventType
from tests.support.runtime_stack import RuntimeStack, running_stack, runtime_settings
from tests.support.scripted_llm import Hang, HttpError, ScriptedLLM, Text

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(
    tmp_path: Path, sqlite_database_url: str, upstream: ScriptedLLM
) -> AsyncIterator[RuntimeStack]:
    healthy = {"provider": "openai", "base_url": upstream.base_url, "model": "healthy-up"}
    flaky = {**healthy, "model": "flaky-up", "fallbacks": ["healthy"]}
    settings = runtime_settings(
        tmp_path,
        sqlite_database_url,
        upstream.base_url,
        models={"healthy": healthy, "flaky": flaky},
        # Outages are waited out elsewhere (test_upstream_outage): here a failure is final.
        llm={"retry_window_s": 0},
    )
    async with running_stack(settings) as running:
        yield running


async def test_run_timeout_fails_the_run_once_without_a_reply(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    upstream.script(Hang(seconds=20))
    chat = await stack.conversation(run_timeout_s=1)
    accepted = await stack.accept(chat, "are you there?")
    run = await stack.wait_run(chat, accepted.run.id, {"failed", "completed", "cancelled"})
    assert run.status == "failed"
    assert run.error is not None and "timed out" in run.error
    assert run.finished_at is not None and run.lease_owner is None
    events = await stack.events(chat, run.id)
    assert [e.type for e in events] == [EventType.QUEUED, EventType.STARTED, EventType.FAILED]
    assert events[-1].data == {"error": run.error}
    assert [m.role for m in await stack.messages(chat)] == ["user"]
    assert len(upstream.chat_requests()) == 1


async def test_upstream_failing_every_attempt_fails_the_run_with_the_error(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    retries = stack.settings.llm.retries
    upstream.script(*[HttpError(500, message="upstream exploded")] * (retries + 1))
    chat = await stack.conversation()
    accepted = await stack.accept(chat, "hello?")
    run = await stack.wait_run(chat, accepted.run.id, {"failed", "completed", "cancelled"})
    assert run.status == "failed"
    # The tenant reads what failed, not where: the address stays in the operator's log.
    assert run.error == "the model upstream is unavailable"
    assert len(upstream.chat_requests()) == retries + 1
    events = await stack.events(chat, run.id)
    terminal = [e for e in events if e.type in TERMINAL]
    assert [(e.type, e.data) for e in terminal] == [(EventType.FAILED, {"error": run.error})]
    assert [m.role for m in await stack.messages(chat)] == ["user"]


async def test_a_failing_model_falls_back_to_a_healthy_one(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    retries = stack.settings.llm.retries
    upstream.script(*[HttpError(503)] * (retries + 1), model="flaky-up")
    upstream.script(Text("the fallback speaks", chunks=2), model="healthy-up")
    chat = await stack.conversation("resilient", model="flaky")
    accepted = await stack.accept(chat, "anyone?")
    run = await stack.wait_run(chat, accepted.run.id, {"failed", "completed", "cancelled"})
    assert run.status == "completed", run.error
    assert [r.model for r in upstream.chat_requests()] == ["flaky-up"] * (retries + 1) + [
        "healthy-up"
    ]
    replies = [m for m in await stack.messages(chat) if m.role == "assistant"]
    assert [(m.content, m.run_id) for m in replies] == [("the fallback speaks", run.id)]
    assert replies[0].metadata == {"model": "healthy"}
    events = await stack.events(chat, run.id)
    assert [e.type for e in events] == [
        EventType.QUEUED,
        EventType.STARTED,
        EventType.MESSAGE_COMPLETED,
        EventType.COMPLETED,
    ]
    assert events[2].data["message"]["content"] == "the fallback speaks"
