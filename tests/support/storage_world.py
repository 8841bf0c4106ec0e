"""Storage test fixtures: a migrated database and a tenant with an agent, session and run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from soma.config import Settings
from soma.observability.metrics import Metrics
from soma.storage import Database, DatabaseService, StorageMetrics, create_engine, migrate


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated `Database` on the parametrized backend (SQLite and PostgreSQL)."""
    engine = create_engine(database_url, 5, False)
    await migrate(engine)
    yield Database(engine, StorageMetrics(Metrics()))
    await engine.dispose()


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[DatabaseService]:
    """The started database service (run and tool stores included) on the parametrized backend."""
    started = DatabaseService(Settings(database={"url": database_url}), Metrics())
    await started.start()
    yield started
    await started.stop()


@dataclass(frozen=True)
class World:
    tenant: str
    agent: str
    session: str
    message: str
    run: str


async def make_world(db: Database, name: str) -> World:
    """A tenant `name` with agent `assistant`, one session, one user message and its run."""
    async with db.transaction() as uow:
        tenant = await uow.tenants.create(name)
        agent = await uow.agents.create(
            tenant.id, name="assistant", instructions="Be brief.", model="local"
        )
        session = await uow.sessions.create(tenant.id, agent_id=agent.id, title="first")
        message, _ = await uow.messages.create(tenant.id, session.id, role="user", content="hi")
        run = await uow.runs.create(
            tenant.id, session_id=session.id, agent_id=agent.id, message_id=message.id
        )
    return World(tenant.id, agent.id, session.id, message.id, run.id)
