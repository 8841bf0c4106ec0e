"""A client's Idempotency-Key makes a retried message POST safe, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Table, func, select

from soma.config import Settings
from soma.core.errors import ConflictError
from soma.observability.metrics import Metrics
from soma.runs.commands import accept_message
from soma.storage import DatabaseService
from soma.storage.repositories import Agent, Session
from soma.storage.tables import messages, outbox, runs

pytestmark = pytest.mark.integration


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[tuple[DatabaseService, Agent, Session]]:
    service = DatabaseService(Settings(database={"url": database_url}), Metrics())
    await service.start()
    async with service.database.transaction() as uow:
        tenant = await uow.tenants.create("idem")
        agent = await uow.agents.create(tenant.id, name="a", instructions="", model="x")
        session = await uow.sessions.create(tenant.id, agent_id=agent.id)
    yield service, agent, session
    await service.stop()


async def count(service: DatabaseService, table: Table) -> int:
    async with service.database.read() as uow:
        result = await uow.connection.execute(select(func.count()).select_from(table))
        return int(result.scalar_one())


async def test_a_retried_key_returns_the_first_acceptance_and_writes_nothing(
    world: tuple[DatabaseService, Agent, Session],
) -> None:
    service, agent, session = world
    first = await accept_message(
        service.run_store, session, agent, "pay once", idempotency_key="k1"
    )
    again = await accept_message(
        service.run_store, session, agent, "pay once", idempotency_key="k1"
    )
    assert not first.replayed and again.replayed
    assert (again.message.id, again.run.id) == (first.message.id, first.run.id)
    assert again.events == []
    assert (await count(service, messages), await count(service, runs)) == (1, 1)
    assert await count(service, outbox) == 1
    # Another key, or none, is another message.
    other = await accept_message(
        service.run_store, session, agent, "pay once", idempotency_key="k2"
    )
    assert other.run.id != first.run.id and not other.replayed
    assert await count(service, runs) == 2


async def test_a_key_reused_for_another_message_is_a_conflict(
    world: tuple[DatabaseService, Agent, Session],
) -> None:
    service, agent, session = world
    await accept_message(service.run_store, session, agent, "first", idempotency_key="same")
    with pytest.raises(ConflictError, match="Idempotency-Key"):
        await accept_message(service.run_store, session, agent, "second", idempotency_key="same")
    assert await count(service, runs) == 1


async def test_concurrent_retries_of_one_key_make_exactly_one_run(
    world: tuple[DatabaseService, Agent, Session],
) -> None:
    service, agent, session = world
    results = await asyncio.gather(
        *(
            accept_message(service.run_store, session, agent, "once", idempotency_key="race")
            for _ in range(12)
        )
    )
    assert len({r.run.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert (await count(service, messages), await count(service, runs)) == (1, 1)


async def test_keys_are_scoped_to_their_session(
    world: tuple[DatabaseService, Agent, Session],
) -> None:
    service, agent, session = world
    async with service.database.transaction() as uow:
        other = await uow.sessions.create(session.tenant_id, agent_id=agent.id)
    a = await accept_message(service.run_store, session, agent, "hi", idempotency_key="k")
    b = await accept_message(service.run_store, other, agent, "hi", idempotency_key="k")
    assert a.run.id != b.run.id and not b.replayed
