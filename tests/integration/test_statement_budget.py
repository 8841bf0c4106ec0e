"""The hot path's statement budget (ARCHITECTURE §6), counted on both backends.

Accept is one transaction and one round trip; claim plus the context is one round trip;
completion is one transaction. Counts, not timings: a change that adds a statement, a round
trip or a transaction to a turn fails here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import event

from soma.bus.port import OutgoingMessage
from soma.bus.topics import CONVERSATION_OUTBOUND
from soma.cache.memory_streams import MemoryRunStreams
from soma.config import Settings
from soma.core.clock import utcnow
from soma.core.ids import new_id
from soma.observability.metrics import Metrics
from soma.runs.commands import Accepted, accept_message, run_request
from soma.runs.events import EventType, RunStatus
from soma.runs.journal import RunJournal
from soma.runs.store import Claim, Completion, StatementCounts, reply_key
from soma.storage import DatabaseService
from tests.support.runtime_stack import running_stack, runtime_settings, wait_for
from tests.support.scripted_llm import ScriptedLLM, Text

pytestmark = pytest.mark.integration
T = TypeVar("T")

# (round trips, transactions, statements) per step, by backend. SQLite statements include
# BEGIN and COMMIT, and its round trip is one job handed to the writer thread; a PostgreSQL
# step is one data-modifying CTE, completion inside BEGIN ... COMMIT.
BUDGET = {
    "sqlite": {"accept": (1, 1, 7), "claim": (1, 1, 7), "complete": (1, 1, 8)},
    "postgresql": {"accept": (1, 1, 1), "claim": (1, 1, 1), "complete": (3, 1, 1)},
}
TURN_TRANSACTIONS = 5
"""A whole turn: accept, claim, completion, and the relay marking what it published (the
run request, then the reply's announcement; one transaction when they go out together)."""


def spent(before: StatementCounts, after: StatementCounts) -> tuple[int, int, int]:
    return (
        after.trips - before.trips,
        after.transactions - before.transactions,
        after.statements - before.statements,
    )


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[DatabaseService]:
    started = DatabaseService(Settings(database={"url": database_url}), Metrics())
    await started.start()
    yield started
    await started.stop()


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


@pytest.fixture
def upstream() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


async def test_a_whole_turn_takes_a_handful_of_transactions_and_no_orm_statement(
    tmp_path: Path, database_url: str, upstream: ScriptedLLM
) -> None:
    upstream.script(Text("warm"), Text("counted"))
    # Lease renewals are per worker and per interval, not per turn: keep them out of the count.
    settings = runtime_settings(tmp_path, database_url, upstream.base_url, runtime={"lease_s": 60})
    async with running_stack(settings) as stack:
        chat = await stack.conversation()

        async def turn(content: str) -> str:
            """Accept, wait until the run finished and both its messages went to the bus."""
            relayed = stack.metrics.registry.get_sample_value("soma_outbox_relayed_total") or 0
            run_id = (await stack.accept(chat, content)).run.id

            async def finished() -> str | None:
                found = await stack.run_store.run_reply(chat.tenant_id, run_id)
                assert found is not None
                return found[0].status if found[0].finished_at else None

            def published() -> bool | None:
                value = stack.metrics.registry.get_sample_value("soma_outbox_relayed_total")
                return True if (value or 0) - relayed >= 2 else None

            status = await wait_for(finished, "the run to finish")
            await wait_for(_async(published), "the request and the reply to be relayed")
            return status

        # The first turn also sees the relay's start-up housekeeping; the second is a turn.
        assert await turn("warm up") == "completed"
        orm: list[str] = []

        def count(*args: Any) -> None:
            orm.append(str(args[2]))

        engine = stack.database.engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        before = stack.run_store.counts
        try:
            assert await turn("count me") == "completed"
        finally:
            event.remove(engine, "before_cursor_execute", count)
        _, transactions, _ = spent(before, stack.run_store.counts)
        assert transactions <= TURN_TRANSACTIONS
        assert orm == [], "the hot path went through the ORM"
