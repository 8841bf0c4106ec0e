"""Memory in turns, both backends: what a user says in one session is recalled into the
prompt of their next session (never another user's); the pipeline stores each completed run
once however often `conversation.outbound` delivers it; agents without memory cost nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import event, select

from soma.bus.topics import CONVERSATION_OUTBOUND
from soma.core.events import Envelope
from soma.memory.extract import EXTRACTION_PROMPT
from soma.runtime.recall import HEADER
from soma.storage.tables import outbox
from tests.support.runtime_stack import (
    Chat,
    RuntimeStack,
    running_stack,
    runtime_settings,
    wait_for,
)
from tests.support.scripted_llm import RecordedRequest, ScriptedLLM, Text

pytestmark = pytest.mark.integration
FACT = "My favourite colour is green and I live in Lyon."


def _system(request: RecordedRequest) -> str:
    messages: list[dict[str, Any]] = request.body["messages"]
    return "".join(m["content"] for m in messages if m["role"] == "system")


def _last_turn_prompt(upstream: ScriptedLLM) -> str:
    """The system prompt of the newest turn (not of the pipeline's extraction calls)."""
    prompts = [_system(r) for r in upstream.chat_requests()]
    return [p for p in prompts if not p.startswith(EXTRACTION_PROMPT)][-1]


async def _turn(stack: RuntimeStack, chat: Chat, content: str) -> str:
    accepted = await stack.accept(chat, content)
    run = await stack.wait_run(chat, accepted.run.id, {"completed", "failed"})
    assert run.status == "completed", run.error
    return run.id


async def _stored(stack: RuntimeStack, tenant_id: str, count: int) -> None:
    async def reached() -> bool | None:
        page = await stack.memory_service.newest(tenant_id, 100)
        return True if len(page.items) >= count else None

    await wait_for(reached, f"{count} memories")


def _pipeline_runs(stack: RuntimeStack, result: str) -> float:
    sample = stack.metrics.registry.get_sample_value(
        "soma_memory_pipeline_runs_total", {"result": result}
    )
    return sample or 0.0


async def test_a_fact_told_in_one_session_is_recalled_in_the_next(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM
) -> None:
    settings = runtime_settings(tmp_path, database_url, upstream.base_url)
    async with running_stack(settings, memory=True) as stack:
        first = await stack.conversation("keeper", memory=True, user="alice")
        await _turn(stack, first, FACT)
        await _stored(stack, first.tenant_id, 1)
        again = await stack.conversation("keeper", memory=True, user="alice")
        await _turn(stack, again, "Where do I live?")
        prompt = _last_turn_prompt(upstream)
        assert HEADER in prompt and FACT in prompt
        stranger = await stack.conversation("keeper", memory=True, user="bob")
        await _turn(stack, stranger, "Where do I live?")
        assert FACT not in _last_turn_prompt(upstream)
        # A question is not a fact: nothing more was kept.
        await wait_for(
            lambda: _async(True if _pipeline_runs(stack, "stored") >= 3 else None), "pipeline"
        )
        assert [
            m.content for m in (await stack.memory_service.newest(first.tenant_id, 9)).items
        ] == [FACT]


async def _async(value: bool | None) -> bool | None:
    return value


async def test_redelivered_completions_store_nothing_twice(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM
) -> None:
    settings = runtime_settings(tmp_path, database_url, upstream.base_url)
    async with running_stack(settings, memory=True) as stack:
        chat = await stack.conversation("keeper", memory=True, user="alice")
        run_id = await _turn(stack, chat, FACT)
        await _stored(stack, chat.tenant_id, 1)
        query = select(outbox.c.payload).where(outbox.c.topic == CONVERSATION_OUTBOUND)
        async with stack.database.read() as uow:
            payloads = [bytes(p) for p in (await uow.connection.execute(query)).scalars()]
        (payload,) = [p for p in payloads if Envelope.from_bytes(p).run_id == run_id]
        for _ in range(3):
            await stack.bus.publish(CONVERSATION_OUTBOUND, chat.session_id, payload)
        await wait_for(
            lambda: _async(True if _pipeline_runs(stack, "duplicate") >= 3 else None),
            "three redeliveries",
        )
        assert len((await stack.memory_service.newest(chat.tenant_id, 9)).items) == 1


async def test_facts_extracted_by_the_model_replace_what_they_change(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM
) -> None:
    settings = runtime_settings(
        tmp_path, database_url, upstream.base_url, memory={"extraction": "llm"}
    )
    moved = {"content": "The user lives in Paris.", "kind": "fact", "replaces": [1]}
    async with running_stack(settings, memory=True) as stack:
        chat = await stack.conversation("keeper", memory=True, user="alice")
        upstream.script(Text("Noted."), Text(_facts({"content": "The user lives in Berlin."})))
        await _turn(stack, chat, "I live in Berlin.")
        await _stored(stack, chat.tenant_id, 1)
        upstream.script(Text("Noted."), Text(_facts(moved)))
        await _turn(stack, chat, "I moved to Paris last week.")
        await wait_for(
            lambda: _async(True if _pipeline_runs(stack, "stored") >= 2 else None), "pipeline"
        )
        extraction = upstream.chat_requests()[-1].last_user_content
        assert "Known:\n[1] The user lives in Berlin." in extraction
        upstream.script(Text("Paris."))
        later = await stack.conversation("keeper", memory=True, user="alice")
        await _turn(stack, later, "Where do I live?")
        prompt = _last_turn_prompt(upstream)
        assert "The user lives in Paris." in prompt and "Berlin" not in prompt


def _facts(*memories: dict[str, Any]) -> str:
    return orjson.dumps({"memories": list(memories)}).decode()


async def test_agents_without_memory_add_no_memory_statements_to_a_turn(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM
) -> None:
    settings = runtime_settings(tmp_path, database_url, upstream.base_url)
    async with running_stack(settings, memory=True) as stack:
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        engine = stack.database.engine.sync_engine
        event.listen(engine, "before_cursor_execute", record)
        try:
            chat = await stack.conversation("plain", memory=False, user="alice")
            await _turn(stack, chat, FACT)
            await wait_for(
                lambda: _async(True if _pipeline_runs(stack, "skipped") >= 1 else None),
                "the pipeline to skip the run",
            )
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert not [s for s in statements if "memories" in s]
        assert HEADER not in _last_turn_prompt(upstream)
        recalls = stack.metrics.registry.get_sample_value("soma_memory_recall_seconds_count")
        assert not recalls
