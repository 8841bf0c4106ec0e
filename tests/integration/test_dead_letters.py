"""Dead letters on both stacks (local bus + SQLite, Kafka + PostgreSQL): a poison message is
kept as one row, replayed once however often replay is asked for (and then delivered exactly
once), discarded with an audit entry, and invisible to other tenants."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from soma.bus.outbox import OutboxRelay
from soma.bus.port import Bus, Delivery
from soma.bus.service import create_bus
from soma.bus.topics import CONVERSATION_OUTBOUND
from soma.config import Settings
from soma.core.events import Envelope
from soma.dlq.replay import discard, replay
from soma.dlq.service import DeadLetterService
from soma.observability.metrics import Metrics
from soma.storage import DatabaseService
from tests.harness.kafka import make_bus_settings

pytestmark = pytest.mark.integration


async def eventually(predicate: Callable[[], object], timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


class Rig:
    def __init__(self, bus: Bus, database: DatabaseService, relay: OutboxRelay) -> None:
        self.bus, self.database, self.relay = bus, database, relay
        self.broken = True
        self.got: list[bytes] = []
        self.letters: list[object] = []

    async def flaky(self, delivery: Delivery) -> None:
        if self.broken:
            raise RuntimeError("the downstream is broken")
        self.got.append(delivery.value)

    async def refresh(self) -> None:
        async with self.database.database.read() as uow:
            self.letters = list((await uow.dead_letters.list(50))[0])


@pytest.fixture(params=["embedded", "distributed"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "embedded":
        bus = make_bus_settings("local")
        url = f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}"
    else:
        bus = make_bus_settings("kafka", request.getfixturevalue("kafka_bootstrap"))
        url = request.getfixturevalue("pg_database_url")
    return Settings(bus=bus.bus, outbox=bus.outbox, database={"url": url})


@pytest.fixture
async def rig(settings: Settings) -> AsyncIterator[Rig]:
    metrics = Metrics()
    database = DatabaseService(settings, metrics)
    await database.start()
    bus = create_bus(settings, metrics)
    relay = OutboxRelay(database.outbox_store, bus, settings.outbox, metrics)
    built = Rig(bus, database, relay)
    await bus.start()
    await bus.subscribe(CONVERSATION_OUTBOUND, "flaky", built.flaky)
    keeper = DeadLetterService(bus, database.database)
    await keeper.start()
    await relay.start()
    try:
        yield built
    finally:
        await relay.stop()
        await keeper.stop()
        await bus.stop()
        await database.stop()


async def test_a_dead_letter_is_kept_replayed_once_and_discarded(rig: Rig) -> None:
    async with rig.database.database.transaction() as uow:
        tenant = await uow.tenants.create("dlq-a")
        other = await uow.tenants.create("dlq-b")
    envelope = Envelope(type="message.completed", tenant_id=tenant.id, session_id="s1",
                        payload={"n": 1})  # fmt: skip
    await rig.bus.publish(CONVERSATION_OUTBOUND, "s1", envelope.to_bytes(), {"h": "kept"})

    async def kept() -> bool:
        await rig.refresh()
        return bool(rig.letters)

    async with asyncio.timeout(60):
        while not await kept():
            await asyncio.sleep(0.05)
    (letter,) = rig.letters
    assert letter.topic == CONVERSATION_OUTBOUND  # type: ignore[attr-defined]
    assert letter.tenant_id == tenant.id  # type: ignore[attr-defined]
    assert "the downstream is broken" in letter.error  # type: ignore[attr-defined]
    assert letter.attempts == 3  # type: ignore[attr-defined]
    letter_id: str = letter.id  # type: ignore[attr-defined]

    # Another tenant cannot see, replay or discard it.
    assert await replay(rig.database.database, letter_id, tenant_id=other.id, actor="key:b",
                        audit_tenant=other.id) is None  # fmt: skip
    assert not await discard(rig.database.database, letter_id, tenant_id=other.id,
                             actor="key:b", audit_tenant=other.id)  # fmt: skip

    rig.broken = False
    asked = await asyncio.gather(
        *(replay(rig.database.database, letter_id, tenant_id=tenant.id, actor="key:a",
                 audit_tenant=tenant.id) for _ in range(3))
    )  # fmt: skip
    assert sorted(r.now for r in asked if r is not None) == [False, False, True]
    await eventually(lambda: rig.got)
    await asyncio.sleep(1.0)  # room for a second delivery, were there one
    assert rig.got == [envelope.to_bytes()]
    # Replaying it once more publishes nothing.
    again = await replay(rig.database.database, letter_id, tenant_id=tenant.id, actor="key:a",
                         audit_tenant=tenant.id)  # fmt: skip
    assert again is not None and again.now is False

    assert await discard(rig.database.database, letter_id, tenant_id=tenant.id, actor="key:a",
                         audit_tenant=tenant.id)  # fmt: skip
    await rig.refresh()
    assert rig.letters == []
    async with rig.database.database.read() as uow:
        entries, _ = await uow.audit.list(tenant.id, 50)
        assert [e.action for e in entries] == ["dead_letter.replay", "dead_letter.discard"]
        assert (await uow.audit.verify(tenant.id)).ok
