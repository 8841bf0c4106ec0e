"""Repository contracts on SQLite and PostgreSQL: tenant isolation, paging, idempotency."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError

from soma.core.clock import utcnow
from soma.core.errors import ConflictError, NotFoundError
from soma.core.ids import new_id
from soma.observability.metrics import Metrics
from soma.storage import Database, StorageMetrics, create_engine, migrate
from soma.storage.tables import audit_log
from tests.support.storage_world import make_world

pytestmark = pytest.mark.integration


async def test_one_tenant_cannot_see_or_change_another_tenants_rows(db: Database) -> None:
    a, b = await make_world(db, "a"), await make_world(db, "b")
    later = utcnow() + timedelta(minutes=1)
    async with db.transaction() as uow:
        assert await uow.agents.get(b.tenant, a.agent) is None
        assert await uow.agents.get_by_name(b.tenant, "assistant") is not None  # b's own
        assert await uow.sessions.get(b.tenant, a.session) is None
        assert await uow.messages.get(b.tenant, a.message) is None
        assert await uow.runs.get(b.tenant, a.run) is None
        assert [x.id for x in (await uow.agents.list(b.tenant, 10))[0]] == [b.agent]
        assert [x.id for x in (await uow.sessions.list(b.tenant, 10))[0]] == [b.session]
        assert (await uow.messages.list(b.tenant, a.session, 10))[0] == []
        assert (await uow.runs.list(b.tenant, 10, session_id=a.session))[0] == []
        assert await uow.agents.update(b.tenant, a.agent, instructions="pwned") is None
        assert await uow.sessions.update(b.tenant, a.session, title="pwned") is None
        assert await uow.runs.update_status(b.tenant, a.run, "failed") is None
        assert (
            await uow.runs.claim(
                b.tenant, a.run, owner="w", lease_until=later, from_statuses=["queued"]
            )
            is None
        )
        assert not await uow.agents.delete(b.tenant, a.agent)
        assert not await uow.sessions.delete(b.tenant, a.session)
        with pytest.raises(NotFoundError):
            await uow.messages.create(b.tenant, a.session, role="user", content="pwned")
        with pytest.raises(NotFoundError):
            await uow.run_events.append(b.tenant, a.run, "run.failed", {})
    async with db.read() as uow:
        agent = await uow.agents.get(a.tenant, a.agent)
        session = await uow.sessions.get(a.tenant, a.session)
        run = await uow.runs.get(a.tenant, a.run)
        messages, _ = await uow.messages.list(a.tenant, a.session, 10)
    assert agent is not None and agent.instructions == "Be brief."
    assert session is not None and session.title == "first"
    assert run is not None and run.status == "queued"
    assert [m.content for m in messages] == ["hi"]


async def test_lists_page_through_every_row_once_in_id_order(db: Database) -> None:
    world = await make_world(db, "paging")
    async with db.transaction() as uow:
        for index in range(4):
            await uow.sessions.create(world.tenant, agent_id=world.agent, title=f"s{index}")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    async with db.read() as uow:
        while True:
            items, cursor = await uow.sessions.list(world.tenant, 2, cursor)
            seen += [item.id for item in items]
            pages += 1
            if cursor is None:
                break
    assert pages == 3
    assert len(seen) == 5 and seen == sorted(seen)


async def test_messages_are_numbered_and_an_idempotency_key_inserts_once(db: Database) -> None:
    world = await make_world(db, "idem")
    async with db.transaction() as uow:
        first, inserted = await uow.messages.create(
            world.tenant, world.session, role="assistant", content="answer", idempotency_key="r1"
        )
        again, inserted_again = await uow.messages.create(
            world.tenant, world.session, role="assistant", content="answer", idempotency_key="r1"
        )
        later, _ = await uow.messages.create(world.tenant, world.session, role="user", content="x")
    assert inserted and not inserted_again
    assert again.id == first.id and again.seq == first.seq == 2
    assert later.seq == 3
    async with db.transaction() as uow:  # a redelivery in a later transaction
        redelivered, inserted = await uow.messages.create(
            world.tenant, world.session, role="assistant", content="answer", idempotency_key="r1"
        )
        page, _ = await uow.messages.list(world.tenant, world.session, 10)
        tail = await uow.messages.history(world.tenant, world.session, limit=2)
        upto = await uow.messages.history(world.tenant, world.session, limit=5, up_to_seq=2)
    assert not inserted and redelivered.id == first.id
    assert [m.seq for m in page] == [1, 2, 3]
    assert [m.seq for m in tail] == [2, 3]
    assert [m.seq for m in upto] == [1, 2]


async def test_concurrent_appends_to_one_session_get_distinct_numbers(db: Database) -> None:
    world = await make_world(db, "concurrent")

    async def append(index: int) -> int:
        async with db.transaction() as uow:
            message, _ = await uow.messages.create(
                world.tenant, world.session, role="user", content=str(index)
            )
            return message.seq

    seqs = await asyncio.gather(*(append(i) for i in range(8)))
    assert sorted(seqs) == list(range(2, 10))


async def test_messages_of_a_deleted_session_cannot_be_added(db: Database) -> None:
    world = await make_world(db, "deleted")
    async with db.transaction() as uow:
        assert await uow.sessions.delete(world.tenant, world.session)
        assert await uow.sessions.get(world.tenant, world.session) is None
        with pytest.raises(NotFoundError):
            await uow.messages.create(world.tenant, world.session, role="user", content="x")


async def test_agent_names_are_unique_per_tenant_only(db: Database) -> None:
    a, b = await make_world(db, "a"), await make_world(db, "b")
    with pytest.raises(ConflictError):
        async with db.transaction() as uow:
            await uow.agents.create(a.tenant, name="assistant", instructions="", model="m")
    async with db.transaction() as uow:
        other = await uow.agents.create(a.tenant, name="coder", instructions="", model="m")
    with pytest.raises(ConflictError):
        async with db.transaction() as uow:
            await uow.agents.update(a.tenant, other.id, name="assistant")
    async with db.read() as uow:
        names = sorted(agent.name for agent in (await uow.agents.list(a.tenant, 10))[0])
        assert names == ["assistant", "coder"]
        assert (await uow.agents.get_by_name(b.tenant, "assistant")) is not None


async def test_audit_chain_verifies_and_detects_tampering(db: Database) -> None:
    world = await make_world(db, "audit")
    async with db.transaction() as uow:
        entries = [
            await uow.audit.append(
                world.tenant, actor="key-1", action=f"act{i}", resource="r", data={"i": i, "f": 0.5}
            )
            for i in range(3)
        ]
        assert entries[1].prev_hash == entries[0].hash
        result = await uow.audit.verify(world.tenant)
        assert result.ok and result.checked == 3
        page, _ = await uow.audit.list(world.tenant, 10)
        assert [e.hash for e in page] == [e.hash for e in entries]
        await uow.connection.execute(
            update(audit_log).where(audit_log.c.id == entries[1].id).values(data={"i": 99})
        )
        tampered = await uow.audit.verify(world.tenant)
    assert not tampered.ok and tampered.first_bad_id == entries[1].id


async def test_api_keys_are_found_by_prefix_and_revocable(db: Database) -> None:
    world = await make_world(db, "keys")
    async with db.transaction() as uow:
        key = await uow.api_keys.create(
            world.tenant, prefix="sk_abc", secret_hash="h", name="admin", scopes=["admin", "chat"]
        )
        with pytest.raises(ConflictError):
            await uow.api_keys.create(
                world.tenant, prefix="sk_abc", secret_hash="h2", name="dup", scopes=[]
            )
    async with db.transaction() as uow:
        found = await uow.api_keys.lookup_by_prefix("sk_abc")
        assert found is not None and found.tenant_id == world.tenant
        assert found.scopes == ("admin", "chat") and not found.revoked
        assert await uow.api_keys.revoke(world.tenant, key.id)
        assert not await uow.api_keys.revoke(world.tenant, key.id)
        revoked = await uow.api_keys.get(world.tenant, key.id)
    assert revoked is not None and revoked.revoked


async def test_tool_calls_approvals_and_uploads(db: Database) -> None:
    world = await make_world(db, "tools")
    async with db.transaction() as uow:
        call, inserted = await uow.tool_calls.create(
            world.tenant,
            run_id=world.run,
            session_id=world.session,
            call_id="call_1",
            name="python",
            args={"code": "1+1"},
        )
        same, inserted_again = await uow.tool_calls.create(
            world.tenant,
            run_id=world.run,
            session_id=world.session,
            call_id="call_1",
            name="python",
            args={"code": "1+1"},
        )
        assert inserted and not inserted_again and same.id == call.id
        approval, _ = await uow.approvals.create(
            world.tenant, run_id=world.run, tool_call_id=call.id
        )
        pending, _ = await uow.approvals.list(world.tenant, 10, status="pending")
        assert [a.id for a in pending] == [approval.id]
        decided = await uow.approvals.decide(
            world.tenant, approval.id, status="approved", decided_by="key-1"
        )
        assert decided is not None and decided.status == "approved"
        assert (
            await uow.approvals.decide(
                world.tenant, approval.id, status="denied", decided_by="key-1"
            )
            is None
        )
        finished = await uow.tool_calls.update_status(
            world.tenant, call.id, "succeeded", result={"output": "2"}, finished_at=utcnow()
        )
        assert finished is not None and finished.result == {"output": "2"}
        upload = await uow.uploads.create(
            world.tenant,
            filename="a.txt",
            content_type="text/plain",
            size=3,
            sha256="0" * 64,
            path="uploads/a.txt",
            session_id=world.session,
        )
        assert [u.id for u in (await uow.uploads.list(world.tenant, 10))[0]] == [upload.id]
        assert await uow.uploads.delete(world.tenant, upload.id)
        assert await uow.uploads.get(world.tenant, upload.id) is None


async def test_upload_usage_counts_shared_bytes_once(db: Database) -> None:
    world = await make_world(db, "quota")
    async with db.transaction() as uow:
        made = [
            await uow.uploads.create(
                world.tenant,
                filename=name,
                content_type="text/plain",
                size=size,
                sha256=digest * 64,
                path=f"uploads/{digest}",
            )
            for name, size, digest in (("a", 10, "a"), ("copy", 10, "a"), ("b", 7, "b"))
        ]
        assert await uow.uploads.usage(world.tenant) == (3, 17)
        await uow.uploads.delete(world.tenant, made[0].id)
        assert await uow.uploads.usage(world.tenant) == (2, 17)  # the copy keeps the bytes
        await uow.uploads.delete(world.tenant, made[1].id)
        assert await uow.uploads.usage(world.tenant) == (1, 7)


async def test_dead_letters_can_be_listed_and_marked_replayed(db: Database) -> None:
    async with db.transaction() as uow:
        letter_id = new_id()
        await uow.dead_letters.record(
            letter_id,
            topic="soma.tool.requests",
            key="s1",
            payload=b"\x00bad",
            headers={"traceparent": "t"},
            error="boom",
            attempts=5,
            tenant_id="t1",
        )
        assert await uow.dead_letters.get(letter_id, tenant_id="t2") is None
        stored = await uow.dead_letters.get(letter_id, tenant_id="t1")
        assert stored is not None and stored.payload == b"\x00bad"
        assert await uow.dead_letters.mark_replayed(letter_id)
        assert not await uow.dead_letters.mark_replayed(letter_id)
        open_letters, _ = await uow.dead_letters.list(10, include_replayed=False)
    assert open_letters == []


async def test_timestamps_come_back_timezone_aware_in_utc(db: Database) -> None:
    world = await make_world(db, "time")
    async with db.read() as uow:
        run = await uow.runs.get(world.tenant, world.run)
    assert run is not None and run.created_at.tzinfo is not None
    assert run.created_at.utcoffset() == timedelta(0)
    assert abs(utcnow() - run.created_at.astimezone(UTC)) < timedelta(minutes=5)


async def test_read_units_of_work_refuse_writes_on_postgres(pg_database_url: str) -> None:
    engine = create_engine(pg_database_url, 2, False)
    try:
        await migrate(engine)
        db = Database(engine, StorageMetrics(Metrics()))
        with pytest.raises(DBAPIError, match="read-only transaction"):
            async with db.read() as uow:
                await uow.tenants.create("sneaky")
        async with db.read() as uow:
            assert (await uow.tenants.list(10))[0] == []
    finally:
        await engine.dispose()


async def test_nesting_sqlite_write_transactions_fails_instead_of_deadlocking(
    sqlite_database_url: str,
) -> None:
    engine = create_engine(sqlite_database_url, 2, False)
    try:
        await migrate(engine)
        db = Database(engine, StorageMetrics(Metrics()))
        with pytest.raises(RuntimeError, match="already open in this task"):
            async with db.transaction() as outer:
                await outer.tenants.create("outer")
                async with db.transaction():
                    pass
        async with db.transaction() as uow:  # the lock was released
            assert (await uow.tenants.list(10))[0] == []
    finally:
        await engine.dispose()
