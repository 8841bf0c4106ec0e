"""`memory_save` and `memory_search` in a real tool loop, both backends: saved in the session's
scope, found by the same user's next session, never by another user's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from soma.runs.events import RunStatus
from soma.tools.builtins.memory import MemorySaveTool, MemorySearchTool
from tests.support.runtime_stack import Chat, RuntimeStack, running_stack, runtime_settings
from tests.support.scripted_llm import ScriptedLLM, Text, ToolCalls
from tests.support.tool_stack import CountingTool, Tools

pytestmark = pytest.mark.integration
DONE = {RunStatus.COMPLETED, RunStatus.FAILED}


@pytest.fixture
async def stack(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM
) -> AsyncIterator[RuntimeStack]:
    settings = runtime_settings(tmp_path, database_url, upstream.base_url)
    async with running_stack(settings, memory=True) as running:
        memory, policy = running.memory_service, running.policy
        tools = Tools(
            running,
            tmp_path,
            [
                CountingTool(),
                MemorySaveTool(memory, running.database, policy),
                MemorySearchTool(memory, running.database, policy),
            ],
        )
        await tools.start(running)
        yield running


async def _agent_chat(stack: RuntimeStack, user: str) -> Chat:
    chat = await stack.conversation("rememberer", memory=True, user=user)
    async with stack.database.transaction() as uow:
        agent = await uow.agents.update(
            chat.tenant_id, chat.agent.id, tools=["memory_save", "memory_search"]
        )
    assert agent is not None
    return Chat(chat.tenant_id, agent, chat.session)


async def _tool_output(stack: RuntimeStack, chat: Chat, content: str) -> str:
    run_id = (await stack.accept(chat, content)).run.id
    run = await stack.wait_run(chat, run_id, DONE)
    assert run.status == RunStatus.COMPLETED, run.error
    (result,) = [m.content for m in await stack.messages(chat) if m.role == "tool"]
    return result


async def test_saved_memories_are_found_by_the_same_user_only(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    save = ("memory_save", {"content": "The user's cat is called Tom.", "kind": "fact"})
    upstream.script(ToolCalls([save]), Text("Saved."))
    alice = await _agent_chat(stack, "alice")
    assert await _tool_output(stack, alice, "Can you keep my cat's name?") == "Remembered."
    listed = await stack.memory_service.newest(alice.tenant_id, 10, user="alice")
    assert [(m.content, m.source) for m in listed.items] == [
        ("The user's cat is called Tom.", "tool")
    ]

    search = ("memory_search", {"query": "what is my cat called", "limit": 3})
    upstream.script(ToolCalls([search]), Text("Tom."))
    again = await _agent_chat(stack, "alice")
    assert await _tool_output(stack, again, "What is my cat called?") == (
        "1. The user's cat is called Tom."
    )
    upstream.script(ToolCalls([search]), Text("No idea."))
    bob = await _agent_chat(stack, "bob")
    assert await _tool_output(stack, bob, "What is my cat called?") == (
        "Nothing remembered matches."
    )
