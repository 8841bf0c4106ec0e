"""The outbox: written atomically with state, read by the relay, waking it promptly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from soma.config import Settings
from soma.observability.metrics import Metrics
from soma.storage import Database, DatabaseService, SqlOutboxStore

pytestmark = pytest.mark.integration

WAKE_LIMIT_S = 10.0
"""Generous bound for a wake-up that should be immediate (a liveness check, not a timing one)."""


_SERVICES: dict[int, DatabaseService] = {}


async def _open(url: str) -> tuple[Database, SqlOutboxStore]:
    """A started database service (migrations, run store, outbox store), as a replica has."""
    service = DatabaseService(Settings(database={"url": url}), Metrics())
    await service.start()
    store = service.outbox_store
    # Consume the wake-up that start() and setup may have produced.
    await store.wait_for_new(timeout_s=0.01)
    _SERVICES[id(store)] = service
    return service.database, store


async def _close(database: Database, store: SqlOutboxStore) -> None:
    await _SERVICES.pop(id(store)).stop()


@pytest.fixture
async def opened(database_url: str) -> AsyncIterator[tuple[Database, SqlOutboxStore]]:
    database, store = await _open(database_url)
    yield database, store
    await _close(database, store)


async def _session(db: Database) -> tuple[str, str, str]:
    async with db.transaction() as uow:
        tenant = await uow.tenants.create("t")
        agent = await uow.agents.create(tenant.id, name="a", instructions="", model="local")
        session = await uow.sessions.create(tenant.id, agent_id=agent.id)
    return tenant.id, agent.id, session.id


async def test_a_failing_transaction_leaves_no_message_run_or_outbox_row(
    opened: tuple[Database, SqlOutboxStore],
) -> None:
    db, store = opened
    tenant, agent, session = await _session(db)
    ids: dict[str, str] = {}
    with pytest.raises(RuntimeError, match="publish later"):
        async with db.transaction() as uow:
            message, _ = await uow.messages.create(tenant, session, role="user", content="hi")
            run = await uow.runs.create(
                tenant, session_id=session, agent_id=agent, message_id=message.id
            )
            await uow.outbox.add("soma.conversation.inbound", session, b"{}", {})
            ids = {"message": message.id, "run": run.id}
            raise RuntimeError("publish later")
    async with db.read() as uow:
        assert await uow.messages.get(tenant, ids["message"]) is None
        assert await uow.runs.get(tenant, ids["run"]) is None
    assert await store.pending_count() == 0
    assert await store.fetch_pending(10) == []


async def test_relay_reads_marks_and_prunes_in_id_order(
    opened: tuple[Database, SqlOutboxStore],
) -> None:
    db, store = opened
    async with db.transaction() as uow:
        ids = [
            await uow.outbox.add("soma.t", f"k{i % 3}", f"p{i}".encode(), {"traceparent": str(i)})
            for i in range(1205)
        ]
    assert ids == sorted(ids)
    first = await store.fetch_pending(5)
    assert [r.id for r in first] == ids[:5]
    assert (first[1].key, first[1].payload, first[1].headers) == ("k1", b"p1", {"traceparent": "1"})
    await store.mark_sent(ids[:1201])  # more than one chunk of ids
    assert await store.pending_count() == 4
    assert [r.id for r in await store.fetch_pending(100)] == ids[1201:]
    assert await store.prune_sent(older_than_s=3600) == 0
    assert await store.prune_sent(older_than_s=0) == 1201
    assert await store.pending_count() == 4


async def test_a_commit_with_outbox_rows_wakes_the_relay(
    opened: tuple[Database, SqlOutboxStore],
) -> None:
    db, store = opened
    waiter = asyncio.create_task(store.wait_for_new(timeout_s=300))
    async with db.transaction() as uow:
        await uow.tenants.create("no outbox rows here")
    await asyncio.sleep(0.2)
    assert not waiter.done(), "a commit without outbox rows must not wake the relay"
    async with db.transaction() as uow:
        await uow.outbox.add("soma.t", "k", b"x", {})
    await asyncio.wait_for(waiter, timeout=WAKE_LIMIT_S)
    assert await store.pending_count() == 1


async def test_a_commit_on_another_replica_wakes_the_relay_via_notify(
    pg_database_url: str,
) -> None:
    writer_db, writer_store = await _open(pg_database_url)
    relay_db, relay_store = await _open(pg_database_url)
    try:
        waiter = asyncio.create_task(relay_store.wait_for_new(timeout_s=300))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        async with writer_db.transaction() as uow:
            await uow.outbox.add("soma.t", "k", b"from the other replica", {})
        await asyncio.wait_for(waiter, timeout=WAKE_LIMIT_S)
        records = await relay_store.fetch_pending(10)
        assert [r.payload for r in records] == [b"from the other replica"]
    finally:
        await _close(writer_db, writer_store)
        await _close(relay_db, relay_store)


async def test_only_one_replica_leads_the_relay_on_postgres(pg_database_url: str) -> None:
    first_db, first = await _open(pg_database_url)
    second_db, second = await _open(pg_database_url)
    try:
        async with first.leadership() as leading:
            assert leading
            async with second.leadership() as also_leading:
                assert not also_leading
        async with second.leadership() as leading_now:
            assert leading_now
    finally:
        await _close(first_db, first)
        await _close(second_db, second)


async def test_sqlite_always_leads(sqlite_database_url: str) -> None:
    db, store = await _open(sqlite_database_url)
    try:
        async with store.leadership() as leading:
            assert leading
    finally:
        await _close(db, store)
