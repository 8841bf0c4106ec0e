"""The tool branch of a run on both backends: park, settle at most once, approve, resume.

The real runtime services (worker, outbox relay, bus, cache, policy) and the tools service run
in process; the model is the scripted upstream, issuing tool calls. The tools are the real
`files` built-in and a counting tool of the tests (the plugin interface is the subject).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from soma.core.clock import utcnow
from soma.runs.events import EventType
from soma.runs.tool_steps import decide
from soma.storage.tables import approvals as approvals_table
from soma.storage.tables import tool_calls
from tests.support.runtime_stack import (
    Chat,
    RuntimeStack,
    running_stack,
    runtime_settings,
    wait_for,
)
from tests.support.scripted_llm import ScriptedLLM, Text, ToolCalls
from tests.support.tool_stack import CountingTool, Tools

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

DONE = {"completed", "failed", "cancelled"}


@pytest.fixture
async def stack(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM
) -> AsyncIterator[tuple[RuntimeStack, Tools]]:
    settings = runtime_settings(tmp_path, database_url, upstream.base_url, runtime={"lease_s": 3.0})
    settings = settings.model_copy(
        update={"tools": settings.tools.model_copy(update={"approval_timeout_s": 60.0})}
    )
    async with running_stack(settings) as running:
        tools = Tools(running, tmp_path, [CountingTool(), CountingTool("recount", idempotent=True)])
        await tools.start(running)
        yield running, tools


async def tool_agent(stack: RuntimeStack, name: str = "doer", **settings: Any) -> Chat:
    chat = await stack.conversation(name, **settings)
    async with stack.database.transaction() as uow:
        agent = await uow.agents.update(chat.tenant_id, chat.agent.id, tools=["files", "count"])
    assert agent is not None
    return Chat(chat.tenant_id, agent, chat.session)


async def test_two_parallel_calls_run_once_each_then_the_model_answers(
    stack: tuple[RuntimeStack, Tools], upstream: ScriptedLLM
) -> None:
    runtime, tools = stack
    upstream.script(
        ToolCalls(
            [("files", {"op": "write", "path": "a.txt", "content": "alpha"}), ("count", {"n": 1})]
        ),
        Text("both done"),
    )
    chat = await tool_agent(runtime)
    run_id = (await runtime.accept(chat, "write and count")).run.id
    run = await runtime.wait_run(chat, run_id, DONE)
    assert run.status == "completed", run.error
    assert run.steps == 1
    assert tools.counter.ran == [{"n": 1}]
    workspace = tools.workspaces.path_for(chat.tenant_id, chat.session_id)
    assert (workspace / "a.txt").read_text() == "alpha"
    types = [e.type for e in await runtime.events(chat, run_id)]
    assert types == [
        EventType.QUEUED,
        EventType.STARTED,
        EventType.TOOL_CALL,
        EventType.TOOL_CALL,
        EventType.TOOL_RESULT,
        EventType.TOOL_RESULT,
        EventType.STARTED,
        EventType.MESSAGE_COMPLETED,
        EventType.COMPLETED,
    ]
    # The second model call saw both calls and both results, in order.
    second = upstream.chat_requests()[1].body["messages"]
    roles = [m["role"] for m in second[1:]]
    assert roles == ["user", "assistant", "tool", "tool"]
    assert [m["tool_calls"][0]["function"]["name"] for m in second[2:3]] == ["files"]
    assert {m["content"] for m in second[3:]} >= {"counted 1"}
    assert [m.role for m in await runtime.messages(chat)] == [
        "user", "assistant", "tool", "tool", "assistant",
    ]  # fmt: skip


async def test_a_redelivered_step_runs_nothing_twice(
    stack: tuple[RuntimeStack, Tools], upstream: ScriptedLLM
) -> None:
    runtime, tools = stack
    upstream.script(ToolCalls([("count", {"n": 7})]), Text("counted"))
    chat = await tool_agent(runtime)
    run_id = (await runtime.accept(chat, "count once")).run.id
    await runtime.wait_run(chat, run_id, DONE)
    async with runtime.database.read() as uow:
        calls = await uow.tool_calls.list_for_run(chat.tenant_id, run_id)
    for _ in range(2):
        await tools.service.settle(chat.tenant_id, run_id, [c.id for c in calls])
    assert tools.counter.ran == [{"n": 7}]
    assert (await runtime.run(chat, run_id)).status == "completed"


async def test_invalid_arguments_reach_the_model_and_nothing_runs(
    stack: tuple[RuntimeStack, Tools], upstream: ScriptedLLM
) -> None:
    runtime, tools = stack
    upstream.script(ToolCalls([("count", {"n": "seven"}), ("nope", {})]), Text("sorry"))
    chat = await tool_agent(runtime)
    run_id = (await runtime.accept(chat, "count badly")).run.id
    assert (await runtime.wait_run(chat, run_id, DONE)).status == "completed"
    assert tools.counter.ran == []
    results = [e.data for e in await runtime.events(chat, run_id) if e.type == "tool.result"]
    assert [r["status"] for r in results] == ["error", "error"]
    assert "invalid arguments" in results[0]["output"] and "no tool named" in results[1]["output"]


async def test_approval_parks_the_run_and_a_decision_resumes_it(
    stack: tuple[RuntimeStack, Tools], upstream: ScriptedLLM
) -> None:
    runtime, tools = stack
    upstream.script(
        ToolCalls([("count", {"n": 1})]),
        Text("approved and counted"),
        ToolCalls([("count", {"n": 2})]),
        Text("denied, fine"),
    )
    chat = await tool_agent(runtime, "careful", require_approval=("count",))
    first = (await runtime.accept(chat, "count one")).run.id
    parked = await runtime.wait_run(chat, first, {"awaiting_approval"})
    assert parked.lease_owner is None and tools.counter.ran == []
    approval = await pending_approval(runtime, chat, first)
    async with runtime.database.transaction() as uow:
        assert await decide(uow, chat.tenant_id, approval, approve=True, actor="alice", reason=None)
    assert (await runtime.wait_run(chat, first, DONE)).status == "completed"
    assert tools.counter.ran == [{"n": 1}]

    second = (await runtime.accept(chat, "count two")).run.id
    await runtime.wait_run(chat, second, {"awaiting_approval"})
    approval = await pending_approval(runtime, chat, second)
    async with runtime.database.transaction() as uow:
        assert await decide(uow, chat.tenant_id, approval, approve=False, actor="bob", reason="no")
        # Decided once: a second decision changes nothing.
        assert not await decide(
            uow, chat.tenant_id, approval, approve=True, actor="eve", reason=None
        )
    assert (await runtime.wait_run(chat, second, DONE)).status == "completed"
    assert tools.counter.ran == [{"n": 1}]
    refused = [e.data for e in await runtime.events(chat, second) if e.type == "tool.result"]
    assert refused == [
        {"id": refused[0]["id"], "status": "refused", "output": "refused by bob: no"}
    ]
    approvals = [e.type for e in await runtime.events(chat, second)].count("tool.approval_required")
    assert approvals == 1


async def interrupted_and_swept(runtime: RuntimeStack, tools: Tools, chat: Chat, ask: str) -> str:
    """Ask for a call that waits for an approval, make it one that a tools process started long
    ago and died with, and sweep; the run's id once it completed."""
    run_id = (await runtime.accept(chat, ask)).run.id
    await runtime.wait_run(chat, run_id, {"awaiting_approval"})
    async with runtime.database.transaction() as uow:
        await uow.connection.execute(
            update(tool_calls)
            .where(tool_calls.c.run_id == run_id)
            .values(status="running", started_at=runtime_now_minus(3600))
        )
    assert await tools.service.sweep() == 1
    assert (await runtime.wait_run(chat, run_id, DONE)).status == "completed"
    return run_id


async def test_an_interrupted_call_that_is_not_safe_to_repeat_gives_the_model_an_error(
    stack: tuple[RuntimeStack, Tools], upstream: ScriptedLLM
) -> None:
    runtime, tools = stack
    upstream.script(ToolCalls([("count", {"n": 3})]), Text("noted"))
    chat = await tool_agent(runtime, "fragile", require_approval=("count",))
    run_id = await interrupted_and_swept(runtime, tools, chat, "count three")
    assert tools.counter.ran == []
    results = [e.data for e in await runtime.events(chat, run_id) if e.type == "tool.result"]
    assert results[0]["status"] == "error" and results[0]["output"].startswith("interrupted")


async def test_an_interrupted_call_that_is_safe_to_repeat_runs_again_once(
    stack: tuple[RuntimeStack, Tools], upstream: ScriptedLLM
) -> None:
    runtime, tools = stack
    upstream.script(ToolCalls([("recount", {"n": 4})]), Text("recounted"))
    chat = await tool_agent(runtime, "steady", require_approval=("recount",))
    async with runtime.database.transaction() as uow:
        await uow.agents.update(chat.tenant_id, chat.agent.id, tools=["recount"])
    run_id = await interrupted_and_swept(runtime, tools, chat, "count four")
    assert await tools.service.sweep() == 0
    recount = tools.by_name["recount"]
    assert isinstance(recount, CountingTool) and recount.ran == [{"n": 4}]
    results = [e.data for e in await runtime.events(chat, run_id) if e.type == "tool.result"]
    assert [(r["status"], r["output"]) for r in results] == [("ok", "counted 4")]


async def test_max_steps_fails_a_run_that_never_answers(
    stack: tuple[RuntimeStack, Tools], upstream: ScriptedLLM
) -> None:
    runtime, _ = stack
    upstream.script(*[ToolCalls([("count", {"n": i})]) for i in range(5)])
    chat = await tool_agent(runtime, "looper", max_steps=3)
    run_id = (await runtime.accept(chat, "loop")).run.id
    run = await runtime.wait_run(chat, run_id, DONE)
    assert run.status == "failed"
    assert run.error == "the run reached max_steps (3) without an answer"
    assert len(upstream.chat_requests()) == 3


async def pending_approval(runtime: RuntimeStack, chat: Chat, run_id: str) -> str:
    async def found() -> str | None:
        async with runtime.database.read() as uow:
            page = await uow.approvals.list(chat.tenant_id, 10, status="pending")
        return next((a.id for a in page.items if a.run_id == run_id), None)

    return await wait_for(found, "a pending approval")


def runtime_now_minus(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


async def test_an_undecided_approval_expires_as_a_refusal(
    stack: tuple[RuntimeStack, Tools], upstream: ScriptedLLM
) -> None:
    runtime, tools = stack
    upstream.script(ToolCalls([("count", {"n": 9})]), Text("too late"))
    chat = await tool_agent(runtime, "waiting", require_approval=("count",))
    run_id = (await runtime.accept(chat, "count nine")).run.id
    await runtime.wait_run(chat, run_id, {"awaiting_approval"})
    approval = await pending_approval(runtime, chat, run_id)
    async with runtime.database.transaction() as uow:
        await uow.connection.execute(
            update(approvals_table)
            .where(approvals_table.c.id == approval)
            .values(created_at=runtime_now_minus(3600))
        )
        await uow.connection.execute(
            update(tool_calls)
            .where(tool_calls.c.run_id == run_id)
            .values(created_at=runtime_now_minus(3600))
        )
    await tools.service.sweep()
    assert (await runtime.wait_run(chat, run_id, DONE)).status == "completed"
    assert tools.counter.ran == []
    async with runtime.database.read() as uow:
        decided = await uow.approvals.get(chat.tenant_id, approval)
    assert decided is not None and decided.status == "denied"
    assert decided.decided_by == "the approval timeout"
    (result,) = [e.data for e in await runtime.events(chat, run_id) if e.type == "tool.result"]
    assert result["status"] == "refused" and "not decided within" in result["output"]


async def test_a_call_the_policy_denies_is_refused_and_audited(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM
) -> None:
    # The shipped policy plus one rule: the `count` tool is denied.
    shipped = (ROOT / "soma" / "policy" / "rego" / "soma.rego").read_text()
    allow = '} else := {"allow": true, "require_approval": false, "reason": "allowed"}'
    rule = '} else := _deny("no counting") if {\n\tinput.resource.tool == "count"\n'
    (tmp_path / "rego").mkdir()
    (tmp_path / "rego" / "soma.rego").write_text(shipped.replace(allow, rule + allow))
    settings = runtime_settings(tmp_path, database_url, upstream.base_url)
    settings = settings.model_copy(
        update={"policy": settings.policy.model_copy(update={"rego_dir": tmp_path / "rego"})}
    )
    upstream.script(
        ToolCalls([("count", {"n": 1}), ("files", {"op": "list", "path": "."})]), Text("ok")
    )
    async with running_stack(settings) as runtime:
        tools = Tools(runtime, tmp_path, [CountingTool()])
        await tools.start(runtime)
        chat = await tool_agent(runtime)
        run_id = (await runtime.accept(chat, "count and list")).run.id
        assert (await runtime.wait_run(chat, run_id, DONE)).status == "completed"
        assert tools.counter.ran == []
        async with runtime.database.read() as uow:
            calls = {
                c.name: c.id for c in await uow.tool_calls.list_for_run(chat.tenant_id, run_id)
            }
            trail = (await uow.audit.list(chat.tenant_id, 100)).items
            verified = await uow.audit.verify(chat.tenant_id)
    audited = {(e.action, e.resource) for e in trail if e.resource.startswith("tool_call:")}
    assert audited == {
        ("policy.deny", f"tool_call:{calls['count']}"),
        ("tool.execute", f"tool_call:{calls['files']}"),
    }
    denial = next(e for e in trail if e.action == "policy.deny")
    assert denial.data["reason"] == "no counting" and denial.actor == f"agent:{chat.agent.id}"
    assert verified.ok
