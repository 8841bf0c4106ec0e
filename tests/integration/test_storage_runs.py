"""Run repository contracts on SQLite and PostgreSQL: leases, recovery queries, events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from soma.core.clock import utcnow
from soma.storage import Database
from tests.support.storage_world import make_world

pytestmark = pytest.mark.integration


async def test_run_leases_are_exclusive_until_they_expire(db: Database) -> None:
    world = await make_world(db, "runs")
    soon = utcnow() + timedelta(seconds=30)
    async with db.transaction() as uow:
        claimed = await uow.runs.claim(
            world.tenant, world.run, owner="w1", lease_until=soon, from_statuses=["queued"]
        )
        assert claimed is not None and claimed.status == "running" and claimed.attempt == 1
        assert claimed.started_at is not None
        assert (
            await uow.runs.claim(
                world.tenant, world.run, owner="w2", lease_until=soon, from_statuses=["running"]
            )
            is None
        )
        assert not await uow.runs.renew_lease(world.tenant, world.run, owner="w2", lease_until=soon)
        past = utcnow() - timedelta(seconds=1)
        assert await uow.runs.renew_lease(world.tenant, world.run, owner="w1", lease_until=past)
        expired = await uow.runs.list_expired_leases(
            world.tenant, now=utcnow(), statuses=["running"], limit=10
        )
        assert [run.id for run in expired] == [world.run]
        taken = await uow.runs.claim(
            world.tenant, world.run, owner="w2", lease_until=soon, from_statuses=["running"]
        )
        assert taken is not None and taken.lease_owner == "w2" and taken.attempt == 2
        done = await uow.runs.update_status(
            world.tenant,
            world.run,
            "completed",
            expected=["running"],
            usage={"total_tokens": 12},
            finished_at=utcnow(),
            release_lease=True,
        )
        assert done is not None and done.usage == {"total_tokens": 12}
        assert done.lease_owner is None
        assert (
            await uow.runs.update_status(world.tenant, world.run, "failed", expected=["running"])
            is None
        )
        queued, _ = await uow.runs.list(world.tenant, 10, statuses=["queued"])
    assert queued == []


async def test_run_events_are_numbered_and_replayable(db: Database) -> None:
    world = await make_world(db, "runs")
    async with db.transaction() as uow:
        first = await uow.run_events.append(world.tenant, world.run, "run.queued", {})
        second = await uow.run_events.append(world.tenant, world.run, "run.started", {"n": 1})
        at_ten = await uow.run_events.append(
            world.tenant, world.run, "tool.call", {"id": "c"}, seq=10
        )
        repeat = await uow.run_events.append(world.tenant, world.run, "other", {}, seq=10)
        after = await uow.run_events.append(world.tenant, world.run, "run.completed", {})
        replay = await uow.run_events.list(world.tenant, world.run, after_seq=1)
    assert (first.seq, second.seq, at_ten.seq, after.seq) == (1, 2, 10, 11)
    assert repeat.type == "tool.call" and repeat.data == {"id": "c"}
    assert [(e.seq, e.type) for e in replay] == [
        (2, "run.started"),
        (10, "tool.call"),
        (11, "run.completed"),
    ]


async def test_stalled_runs_are_found_and_requeued_once(db: Database) -> None:
    world = await make_world(db, "runs")
    now = utcnow()
    async with db.transaction() as uow:
        fresh = await uow.runs.list_stalled(
            world.tenant, now=now, queued_before=now - timedelta(seconds=60), limit=10
        )
        assert fresh == [], "a just-queued run is not stalled yet"
        never_claimed = await uow.runs.list_stalled(
            world.tenant, now=now, queued_before=now + timedelta(seconds=1), limit=10
        )
        assert [run.id for run in never_claimed] == [world.run]
        claimed = await uow.runs.claim(
            world.tenant,
            world.run,
            owner="dead-worker",
            lease_until=now - timedelta(seconds=1),
            from_statuses=["queued"],
        )
        assert claimed is not None
        expired = await uow.runs.list_stalled(
            world.tenant, now=now, queued_before=now - timedelta(seconds=60), limit=10
        )
        assert [run.id for run in expired] == [world.run]
        later = now + timedelta(seconds=30)
        requeued = await uow.runs.requeue(
            world.tenant,
            world.run,
            expected=["running"],
            expected_attempt=claimed.attempt,
            next_check_at=later,
        )
        assert requeued is not None and requeued.status == "queued"
        assert requeued.lease_owner is None and requeued.lease_expires_at == later
        assert (
            await uow.runs.requeue(
                world.tenant,
                world.run,
                expected=["running"],
                expected_attempt=claimed.attempt,
                next_check_at=later,
            )
            is None
        ), "a second recovery of the same attempt must not requeue again"
        assert (
            await uow.runs.list_stalled(
                world.tenant, now=now, queued_before=now + timedelta(seconds=1), limit=10
            )
            == []
        ), "a requeued run waits for its next check"
        assert [
            run.id
            for run in await uow.runs.list_stalled(
                world.tenant, now=later + timedelta(seconds=1), queued_before=now, limit=10
            )
        ] == [world.run]
        reclaimed = await uow.runs.claim(
            world.tenant, world.run, owner="w2", lease_until=later, from_statuses=["queued"]
        )
        assert reclaimed is not None and reclaimed.attempt == 2
        await uow.runs.update_status(
            world.tenant, world.run, "completed", finished_at=utcnow(), release_lease=True
        )
        assert (
            await uow.runs.list_stalled(
                world.tenant, now=later + timedelta(days=1), queued_before=later, limit=10
            )
            == []
        )


async def test_pages_expose_items_and_next_cursor(db: Database) -> None:
    world = await make_world(db, "runs")
    async with db.transaction() as uow:
        await uow.runs.create(world.tenant, session_id=world.session, agent_id=world.agent)
        page = await uow.runs.list(world.tenant, 1, session_id=world.session)
        items, cursor = page
        assert page.items == items and page.next_cursor == cursor is not None
        last = await uow.runs.list(world.tenant, 1, page.next_cursor, session_id=world.session)
    assert len(last.items) == 1 and last.next_cursor is None
    assert last.items[0].id != page.items[0].id


async def test_platform_admin_can_find_a_key_by_id_alone(db: Database) -> None:
    world = await make_world(db, "runs")
    async with db.transaction() as uow:
        key = await uow.api_keys.create(
            world.tenant, prefix="sk_x", secret_hash="h", name="n", scopes=["chat"]
        )
        found = await uow.api_keys.get_any_tenant(key.id)
        assert found is not None and found.tenant_id == world.tenant
        assert await uow.api_keys.get_any_tenant("missing") is None
