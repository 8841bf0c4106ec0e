"""The hot path's statement budget (ARCHITECTURE §6), counted on both backends.

Accept is one transaction and one round trip; claim plus the context is one round trip;
completion is one transaction. A tool step: parking the run, the tools service's read, the
start of a call and the recording of its outcome are one round trip each. Counts, not timings:
a change that adds a statement, a round trip or a transaction to a turn fails here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import event

from soma.bus.port import OutgoingMessage
from soma.bus.topics import CONVERSATION_OUTBOUND
from soma.cache.memory_streams import MemoryRunStreams
from soma.core.clock import utcnow
from soma.core.ids import new_id
from soma.llm.types import ToolCall as ModelToolCall
from soma.runs.commands import Accepted, accept_message, run_request
from soma.runs.events import EventType, RunStatus
from soma.runs.journal import RunJournal
from soma.runs.store import Claim, Completion, StatementCounts, reply_key
from soma.runs.tool_steps import park_for_tools, record
from soma.runs.tool_store import Settlement
from soma.storage import DatabaseService
from soma.tools import service as tools_service
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
T = TypeVar("T")

# (round trips, transactions, statements) per step, by backend. SQLite statements include
# BEGIN and COMMIT, and its round trip is one job handed to the writer thread; a PostgreSQL
# step is one data-modifying CTE, completion inside BEGIN ... COMMIT. An accept also chains
# its `message.accept` audit entry: one more statement on SQLite, a part of the same CTE on
# PostgreSQL.
BUDGET = {
    "sqlite": {"accept": (1, 1, 8), "claim": (1, 1, 7), "complete": (1, 1, 8)},
    "postgresql": {"accept": (1, 1, 1), "claim": (1, 1, 1), "complete": (3, 1, 1)},
}
TURN_TRANSACTIONS = 5
"""A whole turn: accept, claim, completion, and the relay marking what it published (the
run request, then the reply's announcement; one transaction when they go out together)."""
# The tool store shares the run store's connections, so `run_store.counts` covers both.
# Recording a tool's outcome also chains its audit entry (as an accept does).
TOOL_BUDGET = {
    "sqlite": {"park": (1, 1, 8), "load": (1, 0, 2), "start": (1, 1, 3), "record": (1, 1, 9)},
    "postgresql": {"park": (1, 1, 1), "load": (1, 0, 1), "start": (1, 1, 1), "record": (1, 1, 1)},
}
TOOL_TURN_TRANSACTIONS = 11
"""A turn with one tool call: accept, claim, park, start, record, claim again, completion, and
the relay marking its four messages (run request, tool request, resume, announcement)."""


def spent(before: StatementCounts, after: StatementCounts) -> tuple[int, int, int]:
    return (
        after.trips - before.trips,
        after.transactions - before.transactions,
        after.statements - before.statements,
    )


def reply_to(accepted: Accepted, reply_seq: int, journal: RunJournal) -> Completion:
    run = accepted.run
    return Completion(
        tenant_id=run.tenant_id,
        run_id=run.id,
        usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        finished_at=utcnow(),
        reply=replace(
            accepted.message,
            id=new_id(),
            role="assistant",
            content="hi",
            seq=reply_seq,
            idempotency_key=reply_key(run.id),
        ),
        events=[journal.event(EventType.MESSAGE_COMPLETED), journal.event(EventType.COMPLETED)],
        outbound=OutgoingMessage(CONVERSATION_OUTBOUND, run.session_id, b"{}"),
        next_request=run_request,
    )


async def test_accept_claim_and_completion_stay_within_the_budget(
    service: DatabaseService,
) -> None:
    async with service.database.transaction() as uow:
        tenant = await uow.tenants.create("budget")
        agent = await uow.agents.create(tenant.id, name="a", instructions="Be brief.", model="x")
        session = await uow.sessions.create(tenant.id, agent_id=agent.id)
    store, budget = service.run_store, BUDGET[service.engine.dialect.name]

    before = store.counts
    accepted = await accept_message(store, session, agent, "hello")
    assert spent(before, store.counts) == budget["accept"]

    before, now = store.counts, utcnow()
    claim = Claim(tenant.id, accepted.run.id, "w1", now, now + timedelta(seconds=30), 3, 200)
    claimed = await store.claim(claim)
    assert spent(before, store.counts) == budget["claim"]
    # Everything the context needs came with the claim.
    assert claimed is not None and claimed.started is not None
    assert claimed.agent is not None and claimed.agent.id == agent.id
    assert [m.content for m in claimed.history] == ["hello"]

    journal = RunJournal(MemoryRunStreams(100, 60), accepted.run.id, claimed.run.attempt)
    journal.event(EventType.STARTED)
    before = store.counts
    done = await store.complete(reply_to(accepted, claimed.reply_seq, journal))
    assert spent(before, store.counts) == budget["complete"]
    assert done is not None and done.status == RunStatus.COMPLETED


def _async(probe: Callable[[], T | None]) -> Callable[[], Awaitable[T | None]]:
    async def wrapped() -> T | None:
        return probe()

    return wrapped


async def relayed_turn(stack: RuntimeStack, chat: Chat, content: str, messages: int) -> str:
    """Accept, wait until the run finished and its `messages` went to the bus; its status."""
    relayed = stack.metrics.registry.get_sample_value("soma_outbox_relayed_total") or 0
    run_id = (await stack.accept(chat, content)).run.id

    async def finished() -> str | None:
        found = await stack.run_store.run_reply(chat.tenant_id, run_id)
        assert found is not None
        return found[0].status if found[0].finished_at else None

    def published() -> bool | None:
        value = stack.metrics.registry.get_sample_value("soma_outbox_relayed_total")
        return True if (value or 0) - relayed >= messages else None

    status = await wait_for(finished, "the run to finish")
    await wait_for(_async(published), f"its {messages} messages to be relayed")
    return status


async def counted_turn(
    stack: RuntimeStack, chat: Chat, messages: int
) -> tuple[str, StatementCounts, list[str]]:
    """A turn after a warm-up one (which also sees the relay's start-up housekeeping): its
    status, what it cost the stores, and the ORM statements it ran."""
    assert await relayed_turn(stack, chat, "warm up", messages) == "completed"
    orm: list[str] = []

    def count(*args: Any) -> None:
        orm.append(str(args[2]))

    engine = stack.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    before = stack.run_store.counts
    try:
        status = await relayed_turn(stack, chat, "count me", messages)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return status, StatementCounts(*spent(before, stack.run_store.counts)), orm


async def test_a_whole_turn_takes_a_handful_of_transactions_and_no_orm_statement(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM
) -> None:
    upstream.script(Text("warm"), Text("counted"))
    # Lease renewals are per worker and per interval, not per turn: keep them out of the count.
    settings = runtime_settings(tmp_path, database_url, upstream.base_url, runtime={"lease_s": 60})
    async with running_stack(settings) as stack:
        chat = await stack.conversation()
        status, cost, orm = await counted_turn(stack, chat, messages=2)
    assert status == "completed"
    assert cost.transactions <= TURN_TRANSACTIONS
    assert orm == [], "the hot path went through the ORM"


async def test_a_tool_step_stays_within_the_budget(service: DatabaseService) -> None:
    async with service.database.transaction() as uow:
        tenant = await uow.tenants.create("budget")
        agent = await uow.agents.create(tenant.id, name="a", instructions="Be brief.", model="x")
        session = await uow.sessions.create(tenant.id, agent_id=agent.id)
    store, tools = service.run_store, service.tool_store
    budget = TOOL_BUDGET[service.engine.dialect.name]
    accepted = await accept_message(store, session, agent, "list my files")
    now = utcnow()
    claim = Claim(tenant.id, accepted.run.id, "w1", now, now + timedelta(seconds=30), 3, 200)
    claimed = await store.claim(claim)
    assert claimed is not None
    journal = RunJournal(MemoryRunStreams(100, 60), accepted.run.id, claimed.run.attempt)
    journal.event(EventType.STARTED)

    before = store.counts
    asked = [ModelToolCall("call_0", "files", '{"op": "list", "path": "."}')]
    parked = await park_for_tools(tools, claimed.run, journal, "", asked, {"total_tokens": 1})
    assert spent(before, store.counts) == budget["park"]
    assert parked is not None and parked.run.status == RunStatus.AWAITING_TOOLS
    (call_event,) = parked.events

    before = store.counts
    loaded = await tools.load(tenant.id, accepted.run.id, [call_event.data["id"]])
    assert spent(before, store.counts) == budget["load"]
    # Everything settling the request needs came in the one read.
    assert loaded is not None and loaded.agent is not None and loaded.agent.id == agent.id
    (call,) = loaded.calls

    before = store.counts
    started = await tools.start(tenant.id, call.id, utcnow(), (call.status,))
    assert spent(before, store.counts) == budget["start"]
    assert started is not None and started.status == "running"

    before = store.counts
    settled = [Settlement(started, "ok", "a.txt", audit="tool.execute")]
    events, resumed = await record(tools, loaded.run, settled, requeue_after_s=600)
    # The execution's audit entry: a part of the statement on PostgreSQL, +1 on SQLite.
    assert spent(before, store.counts) == budget["record"]
    assert resumed and [e.type for e in events] == [EventType.TOOL_RESULT]


async def test_a_whole_tool_turn_takes_a_bounded_number_of_transactions_and_no_orm_statement(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sweep (every few seconds, on the ORM) is not part of a turn.
    monkeypatch.setattr(tools_service, "SWEEP_EVERY_S", 3600.0)
    listing = ToolCalls([("files", {"op": "list", "path": "."})])
    upstream.script(listing, Text("warm"), listing, Text("counted"))
    settings = runtime_settings(tmp_path, database_url, upstream.base_url, runtime={"lease_s": 60})
    async with running_stack(settings) as stack:
        await Tools(stack, tmp_path, [CountingTool()]).start(stack)
        chat = await stack.conversation()
        async with stack.database.transaction() as uow:
            await uow.agents.update(chat.tenant_id, chat.agent.id, tools=["files"])
        status, cost, orm = await counted_turn(stack, chat, messages=4)
    assert status == "completed"
    assert cost.transactions <= TOOL_TURN_TRANSACTIONS
    assert orm == [], "the tool branch went through the ORM"
