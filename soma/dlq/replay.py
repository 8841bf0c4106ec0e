"""Replaying and discarding dead letters: each a transaction with its audit entry."""

from __future__ import annotations

from dataclasses import dataclass

from soma.dlq.service import DLQ_HEADERS
from soma.storage.database import Database
from soma.storage.repositories import DeadLetter


@dataclass(frozen=True, slots=True)
class Replayed:
    letter: DeadLetter
    now: bool
    """False when it had been replayed before (nothing was published again)."""


async def replay(
    database: Database, letter_id: str, *, tenant_id: str | None, actor: str, audit_tenant: str
) -> Replayed | None:
    """Publish the letter again to its topic (through the outbox), once; None if not found.

    `tenant_id` limits the lookup to one tenant's letters (None: any).
    """
    async with database.transaction() as uow:
        letter = await uow.dead_letters.get(letter_id, tenant_id=tenant_id)
        if letter is None:
            return None
        if not await uow.dead_letters.mark_replayed(letter_id, tenant_id=tenant_id):
            return Replayed(letter, now=False)
        headers = {k: v for k, v in letter.headers.items() if k not in DLQ_HEADERS}
        await uow.outbox.add(letter.topic, letter.key, letter.payload, headers)
        await uow.audit.append(
            audit_tenant, actor=actor, action="dead_letter.replay",
            resource=f"dead_letter:{letter_id}", data={"topic": letter.topic},
        )  # fmt: skip
    return Replayed(letter, now=True)


async def discard(
    database: Database, letter_id: str, *, tenant_id: str | None, actor: str, audit_tenant: str
) -> bool:
    async with database.transaction() as uow:
        letter = await uow.dead_letters.get(letter_id, tenant_id=tenant_id)
        if letter is None or not await uow.dead_letters.discard(letter_id, tenant_id=tenant_id):
            return False
        await uow.audit.append(
            audit_tenant, actor=actor, action="dead_letter.discard",
            resource=f"dead_letter:{letter_id}",
            data={"topic": letter.topic, "error": letter.error},
        )  # fmt: skip
    return True
