"""Dead letters: bus messages that failed too often, kept for inspection and replay."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Row

from soma.core.clock import utcnow
from soma.storage.repositories.base import Page, Repository, dialect_insert, fetch_page
from soma.storage.tables import dead_letters


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    tenant_id: str | None
    topic: str
    key: str
    payload: bytes
    headers: dict[str, str]
    error: str
    attempts: int
    created_at: datetime
    """First seen."""
    replayed_at: datetime | None
    last_seen_at: datetime | None = None


def _dead_letter(row: Row[Any]) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        tenant_id=row.tenant_id,
        topic=row.topic,
        key=row.key,
        payload=bytes(row.payload),
        headers=dict(row.headers),
        error=row.error,
        attempts=row.attempts,
        created_at=row.created_at,
        replayed_at=row.replayed_at,
        last_seen_at=row.last_seen_at or row.created_at,
    )


class DeadLetterRepository(Repository):
    """Platform-level rows: `tenant_id` (when the message named one) is a filter, not an owner."""

    __slots__ = ()

    async def record(
        self,
        letter_id: str,
        *,
        topic: str,
        key: str,
        payload: bytes,
        headers: Mapping[str, str],
        error: str,
        attempts: int,
        tenant_id: str | None,
    ) -> None:
        """Keep a dead letter; the same one again (a redelivery, or a replay that failed
        again) adds its attempts, is seen later and is no longer counted as replayed."""
        now = utcnow()
        statement = dialect_insert(self._conn.dialect.name, dead_letters)
        values = {"id": letter_id, "tenant_id": tenant_id, "topic": topic, "key": key,
                  "payload": payload, "headers": dict(headers), "error": error,
                  "attempts": attempts, "created_at": now, "last_seen_at": now}  # fmt: skip
        await self._conn.execute(
            statement.values(values).on_conflict_do_update(
                index_elements=["id"],
                set_={
                    "attempts": dead_letters.c.attempts + attempts,
                    "error": error,
                    "last_seen_at": now,
                    "replayed_at": None,
                },
            )
        )

    async def discard(self, dead_letter_id: str, *, tenant_id: str | None = None) -> bool:
        statement = delete(dead_letters).where(dead_letters.c.id == dead_letter_id)
        if tenant_id is not None:
            statement = statement.where(dead_letters.c.tenant_id == tenant_id)
        result = await self._conn.execute(statement.returning(dead_letters.c.id))
        return result.first() is not None

    async def get(self, dead_letter_id: str, *, tenant_id: str | None = None) -> DeadLetter | None:
        query = select(dead_letters).where(dead_letters.c.id == dead_letter_id)
        if tenant_id is not None:
            query = query.where(dead_letters.c.tenant_id == tenant_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else _dead_letter(row)

    async def list(
        self,
        limit: int,
        cursor: str | None = None,
        *,
        tenant_id: str | None = None,
        topic: str | None = None,
        include_replayed: bool = True,
    ) -> Page[DeadLetter]:
        query = select(dead_letters)
        if tenant_id is not None:
            query = query.where(dead_letters.c.tenant_id == tenant_id)
        if topic is not None:
            query = query.where(dead_letters.c.topic == topic)
        if not include_replayed:
            query = query.where(dead_letters.c.replayed_at.is_(None))
        return await fetch_page(self._conn, query, dead_letters.c.id, limit, cursor, _dead_letter)

    async def mark_replayed(self, dead_letter_id: str, *, tenant_id: str | None = None) -> bool:
        """True when a not-yet-replayed letter was marked now."""
        statement = update(dead_letters).where(
            dead_letters.c.id == dead_letter_id, dead_letters.c.replayed_at.is_(None)
        )
        if tenant_id is not None:
            statement = statement.where(dead_letters.c.tenant_id == tenant_id)
        result = await self._conn.execute(
            statement.values(replayed_at=utcnow()).returning(dead_letters.c.id)
        )
        return result.first() is not None
