"""Run requests on the bus: redelivery, per-session order, cancel of a queued head, lease loss.

Each test runs on SQLite and on PostgreSQL: the guarantees rest on row-level claims and leases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from soma.bus.topics import CONVERSATION_OUTBOUND
from soma.runs.commands import cancel_run
from soma.runs.events import EventType, stream_key
from soma.storage.tables import outbox
from tests.support.runtime_stack import RuntimeStack, running_stack, runtime_settings, wait_for
from tests.support.scripted_llm import ScriptedLLM, Text

pytestmark = pytest.mark.integration

DONE = {"completed", "failed", "cancelled"}
MILESTONES = [EventType.QUEUED, EventType.STARTED, EventType.MESSAGE_COMPLETED, EventType.COMPLETED]


@pytest.fixture
async def stack(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM
) -> AsyncIterator[RuntimeStack]:
    # Renewed every second: a stolen lease is noticed within the slow replies below, and a
    # loaded machine (CI) never lets an honest lease lapse mid-test.
    settings = runtime_settings(tmp_path, database_url, upstream.base_url, runtime={"lease_s": 3.0})
    async with running_stack(settings) as running:
        yield running


async def test_a_redelivered_request_is_answered_once(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    upstream.script(Text("said once", chunks=4, delay_s=0.1))
    chat = await stack.conversation()
    run_id = (await stack.accept(chat, "say it once")).run.id
    await stack.wait_run(chat, run_id, {"running", *DONE})
    # The same envelope again, twice: the bus delivers at least once.
    await stack.deliver(chat, run_id)
    await stack.deliver(chat, run_id)
    run = await stack.wait_run(chat, run_id, DONE)
    await stack.wait_counted("skipped", 2)
    await stack.deliver(chat, run_id)
    await stack.wait_counted("skipped", 3)
    assert run.status == "completed"
    assert (await stack.run(chat, run_id)).attempt == 1
    assert stack.runs_counted("completed") == 1
    replies = [m for m in await stack.messages(chat) if m.role == "assistant"]
    assert [(m.content, m.run_id) for m in replies] == [("said once", run_id)]
    assert [e.type for e in await stack.events(chat, run_id)] == MILESTONES
    assert len(upstream.chat_requests()) == 1
    async with stack.database.read() as uow:
        outbound = await uow.connection.execute(
            select(func.count()).where(outbox.c.topic == CONVERSATION_OUTBOUND)
        )
    assert outbound.scalar_one() == 1


async def test_a_request_redelivered_while_its_run_executes_does_not_run_it_twice(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    """Correctness must not rest on bus order alone (see `is_next_in_session`): a copy of the
    request can arrive while the run executes in this very worker (a rebalance race, a
    partition count change). The local bus serialises one key, so the copy uses another."""
    upstream.script(Text("the only answer", chunks=5, delay_s=0.2))
    chat = await stack.conversation()
    run_id = (await stack.accept(chat, "just once")).run.id

    async def streaming() -> bool | None:
        entries = await stack.cache.streams.read(stream_key(run_id), 0, 100)
        return True if any(b'"message.delta"' in e.data for e in entries) else None

    await wait_for(streaming, "the first delta")
    await stack.deliver(chat, run_id, key=f"{chat.session_id}:redelivered")
    run = await stack.wait_run(chat, run_id, DONE)
    await stack.wait_counted("completed", 1)
    assert run.status == "completed"
    assert len(upstream.chat_requests()) == 1, "the run was executed a second time"
    assert run.attempt == 1
    assert [e.type for e in await stack.events(chat, run_id)] == MILESTONES
    replies = [m for m in await stack.messages(chat) if m.role == "assistant"]
    assert [m.content for m in replies] == ["the only answer"]


async def test_session_order_holds_when_requests_arrive_out_of_order(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    upstream.script(Text("first answer", chunks=3, delay_s=0.1), Text("second answer"))
    chat = await stack.conversation()
    first = (await stack.accept(chat, "one", lose_request=True)).run.id
    second = (await stack.accept(chat, "two", lose_request=True)).run.id
    # The second request overtakes the first (as a re-sent request can).
    await stack.deliver(chat, second)
    await stack.wait_counted("skipped", 1)
    assert (await stack.run(chat, second)).status == "queued"
    await stack.deliver(chat, first)
    done_first = await stack.wait_run(chat, first, DONE)
    done_second = await stack.wait_run(chat, second, DONE)
    assert (done_first.status, done_second.status) == ("completed", "completed")
    assert done_first.finished_at is not None and done_second.started_at is not None
    assert done_second.started_at >= done_first.finished_at
    assert (done_first.attempt, done_second.attempt) == (1, 1)
    # Messages come back in seq order: the replies were written first, then second.
    replies = [m for m in await stack.messages(chat) if m.role == "assistant"]
    assert [(m.run_id, m.content) for m in replies] == [
        (first, "first answer"),
        (second, "second answer"),
    ]
    # The second turn saw the first question and its answer, in order.
    asked = upstream.chat_requests()
    assert [r.last_user_content for r in asked] == ["one", "two"]
    seen = [(m["role"], m["content"]) for m in asked[1].body["messages"][1:]]
    assert seen == [("user", "one"), ("assistant", "first answer"), ("user", "two")]
    assert stack.runs_counted("skipped") == 1  # set aside: not next in its session
    assert stack.runs_counted("completed") == 2


async def test_cancelling_the_queued_head_lets_the_next_run_execute(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    upstream.script(Text("answer to two"))
    chat = await stack.conversation()
    # The head's request is lost, so it stays queued; the next run's request waits behind it.
    head = (await stack.accept(chat, "one", lose_request=True)).run.id
    after = (await stack.accept(chat, "two")).run.id
    await stack.wait_counted("skipped", 1)
    assert (await stack.run(chat, after)).status == "queued"
    cancelled = await cancel_run(
        stack.database, stack.run_store, stack.cache.streams, stack.cache.kv, chat.tenant_id, head
    )
    assert cancelled.status == "cancelled"
    done = await stack.wait_run(chat, after, DONE)
    assert done.status == "completed", done.error
    # A late delivery of the cancelled run's request does not start it either.
    await stack.deliver(chat, head)
    await stack.wait_counted("skipped", 1)
    head_run = await stack.run(chat, head)
    assert head_run.status == "cancelled"
    assert (head_run.attempt, head_run.started_at) == (0, None)
    assert [e.type for e in await stack.events(chat, head)] == [
        EventType.QUEUED,
        EventType.CANCELLED,
    ]
    messages = await stack.messages(chat)
    assert [(m.role, m.run_id) for m in messages] == [
        ("user", head),
        ("user", after),
        ("assistant", after),
    ]
    assert [r.last_user_content for r in upstream.chat_requests()] == ["two"]


async def test_losing_the_lease_abandons_the_attempt_without_a_trace(
    stack: RuntimeStack, upstream: ScriptedLLM
) -> None:
    upstream.script(Text("a long and slow answer " * 4, chunks=30, delay_s=0.1))
    chat = await stack.conversation()
    run_id = (await stack.accept(chat, "take your time")).run.id

    async def streaming() -> bool | None:
        entries = await stack.cache.streams.read(stream_key(run_id), 0, 100)
        return True if any(b'"message.delta"' in e.data for e in entries) else None

    await wait_for(streaming, "the first delta")
    # Another worker takes the run over (as after a long pause of this one).
    await stack.update_run(run_id, lease_owner="other-worker")
    await stack.wait_counted("abandoned", 1)
    run = await stack.run(chat, run_id)
    assert (run.status, run.lease_owner, run.finished_at) == ("running", "other-worker", None)
    assert [e.type for e in await stack.events(chat, run_id)] == [
        EventType.QUEUED,
        EventType.STARTED,
    ]
    assert [m.role for m in await stack.messages(chat)] == ["user"]

    async def upstream_dropped() -> bool | None:
        return True if upstream.abandoned_streams == 1 else None

    await wait_for(upstream_dropped, "the upstream stream to be dropped")
    assert upstream.finished_streams == 0
    assert stack.runs_counted("completed") + stack.runs_counted("failed") == 0
