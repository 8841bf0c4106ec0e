"""A door's accept as the gateway runs it (`soma.gateway.conversation`), on both backends: a
new session and the earlier messages a stateless caller carries are written by the run's one
accepting transaction, so whatever refuses or fails the accept leaves no session behind."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi import HTTPException
from sqlalchemy import Table, event, func, select

from soma.cache.service import create_cache
from soma.config import Settings
from soma.core.errors import LimitExceededError
from soma.gateway.auth.principal import Principal
from soma.gateway.conversation import Sent, Turn, send, start
from soma.gateway.directory import AgentNames, SessionDirectory, agents_by_name
from soma.gateway.runs_view import ChatMetrics, RunsContext
from soma.limits.governor import Limits
from soma.limits.source import StoredOverrides
from soma.observability.metrics import Metrics
from soma.policy.service import create_policy
from soma.runs.commands import Prior, accept, acceptance
from soma.runs.counted import CountedRunStore
from soma.runs.reader import RunEventReader
from soma.storage import DatabaseService
from soma.storage.repositories.agents import Agent, AgentSettings
from soma.storage.repositories.sessions import new_session
from soma.storage.tables import messages, outbox, sessions
from tests.integration.test_statement_budget import spent

pytestmark = pytest.mark.integration

EARLIER = [Prior("system", "Be brief."), Prior("user", "first question"),
           Prior("assistant", "first answer")]  # fmt: skip
# (round trips, transactions, statements) of a stateless accept (its session, three earlier
# messages, the user's and the run). SQLite: BEGIN, the idempotency-free accept's statements,
# the session's INSERT and one per earlier message, COMMIT; PostgreSQL: one CTE.
STATELESS_BUDGET = {"sqlite": (1, 1, 11), "postgresql": (1, 1, 1)}


@dataclass
class Door:
    ctx: RunsContext
    service: DatabaseService
    principal: Principal
    agent: Agent

    async def count(self, table: Table) -> int:
        async with self.service.database.read() as uow:
            result = await uow.connection.execute(select(func.count()).select_from(table))
            return int(result.scalar_one())


@pytest.fixture
def max_inflight_runs() -> int:
    return 10


@pytest.fixture
async def door(tmp_path: Path, database_url: str, max_inflight_runs: int) -> AsyncIterator[Door]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database={"url": database_url},
        cache={"url": "memory://"},
        # Limits read once: counted accepts find them cached.
        limits={"max_inflight_runs": max_inflight_runs, "cache_ttl_s": 60},
    )
    metrics = Metrics()
    service, cache = DatabaseService(settings, metrics), create_cache(settings, metrics)
    policy = create_policy(settings, metrics)
    for started in (service, cache, policy):
        await started.start()
    async with service.database.transaction() as uow:
        tenant = await uow.tenants.create("doors")
        agent = await uow.agents.create(tenant.id, name="a", instructions="", model="x")
        await uow.agents.create(
            tenant.id, name="strict", instructions="", model="x",
            settings=AgentSettings(concurrency="reject"),
        )  # fmt: skip
    limits = Limits(settings.limits, cache.quotas, StoredOverrides(service.database))
    await limits.of(tenant.id)
    store = CountedRunStore(service.run_store, limits)
    ctx = RunsContext(
        database=service.database,
        store=store,
        sessions=SessionDirectory(store, 60),
        streams=cache.streams,
        flags=cache.kv,
        policy=policy,
        reader=RunEventReader(store, cache.streams, 5),
        metrics=ChatMetrics(metrics),
        agents=AgentNames(agents_by_name(service.database), 60),
        admission=limits,
    )
    principal = Principal(tenant.id, "k1", frozenset({"chat"}))
    yield Door(ctx, service, principal, agent)
    await policy.stop()
    await cache.stop()
    await service.stop()


@pytest.fixture
def orm(door: Door) -> Iterator[list[str]]:
    """The statements that went through the ORM (the hot path's must not)."""
    ran: list[str] = []

    def count(*args: Any) -> None:
        ran.append(str(args[2]))

    engine = door.service.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    yield ran
    event.remove(engine, "before_cursor_execute", count)


async def stored(door: Door, sent: Sent) -> list[tuple[int, str, str, str | None]]:
    async with door.service.database.read() as uow:
        page = await uow.messages.list(door.principal.tenant_id, sent.session.id, 100)
    return [(m.seq, m.role, m.content, m.run_id) for m in page.items]


async def test_a_stateless_accept_is_one_transaction(door: Door, orm: list[str]) -> None:
    store = door.service.run_store
    before = store.counts
    sent = await start(door.ctx, door.principal, door.agent, Turn("hello"), EARLIER,
                       metadata={"door": "test"})  # fmt: skip
    cost = spent(before, store.counts)
    assert orm == [], "the accept went through the ORM"
    assert cost == STATELESS_BUDGET[door.service.engine.dialect.name]
    assert sent.fresh and sent.accepted.message.seq == 4
    async with door.service.database.read() as uow:
        session = await uow.sessions.get(door.principal.tenant_id, sent.session.id)
        chain = await uow.audit.verify(door.principal.tenant_id)
        entries, _ = await uow.audit.list(door.principal.tenant_id, 10)
    assert session is not None and session.agent_id == door.agent.id
    assert session.metadata == {"door": "test"}
    assert await stored(door, sent) == [
        (1, "system", "Be brief.", None),
        (2, "user", "first question", None),
        (3, "assistant", "first answer", None),
        (4, "user", "hello", sent.run.id),
    ]
    assert chain.ok and [e.action for e in entries] == ["message.accept"]
    assert entries[0].resource == f"message:{sent.accepted.message.id}"
    assert await door.count(outbox) == 1
    # The session goes on where the accept left its numbering.
    later = await send(door.ctx, door.principal, sent.session.id, Turn("and then"))
    assert later.accepted.message.seq == 5


async def test_earlier_messages_join_an_existing_sessions_accept(door: Door) -> None:
    first = await start(door.ctx, door.principal, door.agent, Turn("hi"))
    store = door.service.run_store
    before = store.counts
    prior = [Prior("user", "again"), Prior("assistant", "sure")]
    sent = await send(door.ctx, door.principal, first.session.id, Turn("go on"), prior)
    assert spent(before, store.counts)[1] == 1
    assert [(seq, role) for seq, role, _, _ in await stored(door, sent)] == [
        (1, "user"), (2, "user"), (3, "assistant"), (4, "user"),
    ]  # fmt: skip


async def test_accepts_arriving_together_number_each_session_apart(door: Door) -> None:
    # Together they share a batch (one statement with many parameter sets on PostgreSQL,
    # one group commit on SQLite): new sessions beside existing ones.
    first = await start(door.ctx, door.principal, door.agent, Turn("hi"))
    said = [Prior("user", "q"), Prior("assistant", "a")]
    sent = await asyncio.gather(
        *(start(door.ctx, door.principal, door.agent, Turn(f"new {i}"), said[:i])
          for i in range(3)),
        *(send(door.ctx, door.principal, first.session.id, Turn(f"more {i}"), said[:i])
          for i in range(3)),
    )  # fmt: skip
    for i, new in enumerate(sent[:3]):
        assert [(seq, c) for seq, _, c, _ in await stored(door, new)] == [
            *((n + 1, p.content) for n, p in enumerate(said[:i])),
            (i + 1, f"new {i}"),
        ]
    contents = [c for _, _, c, _ in await stored(door, first)]
    assert sorted(contents) == sorted(["hi", "more 0", "q", "more 1", "q", "a", "more 2"])
    for i in range(3):  # each accept's earlier messages just before its own
        at = contents.index(f"more {i}")
        assert contents[at - i : at] == [p.content for p in said[:i]]
    assert [seq for seq, _, _, _ in await stored(door, first)] == list(range(1, 8))


@pytest.mark.parametrize("max_inflight_runs", [1])
async def test_a_refused_admission_leaves_no_session(door: Door) -> None:
    await start(door.ctx, door.principal, door.agent, Turn("hi"), EARLIER)
    counts = (await door.count(sessions), await door.count(messages))
    with pytest.raises(LimitExceededError):
        await start(door.ctx, door.principal, door.agent, Turn("one too many"), EARLIER)
    assert (await door.count(sessions), await door.count(messages)) == counts


async def test_a_failed_accept_leaves_no_session(door: Door) -> None:
    first = await start(door.ctx, door.principal, door.agent, Turn("hi"))
    session = new_session(door.principal.tenant_id, door.agent.id)
    written = acceptance(session, door.agent, "clash", create_session=True, prior=EARLIER)
    # The user message is written after the session and the earlier ones: its id taken,
    # the accept fails there and takes them all back.
    clash = replace(written, message=replace(written.message, id=first.accepted.message.id))
    with pytest.raises((asyncpg.UniqueViolationError, sqlite3.IntegrityError)):
        await accept(door.service.run_store, clash)
    async with door.service.database.read() as uow:
        assert await uow.sessions.get(door.principal.tenant_id, session.id) is None
    assert (await door.count(sessions), await door.count(messages)) == (1, 1)


async def test_a_rejecting_agents_new_session_accepts_then_refuses_a_second_run(
    door: Door,
) -> None:
    strict = await door.ctx.agents.get(door.principal.tenant_id, "strict")
    assert strict is not None
    sent = await start(door.ctx, door.principal, strict, Turn("hi"), EARLIER)
    assert sent.accepted.message.seq == 4
    with pytest.raises(HTTPException) as refused:
        await send(door.ctx, door.principal, sent.session.id, Turn("me too"))
    assert refused.value.status_code == 409
