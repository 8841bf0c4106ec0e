"""The transactional outbox: rows written with the state change, published by the relay."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from soma.core.clock import utcnow
from soma.storage.repositories.base import Repository
from soma.storage.tables import outbox

_INSERT = insert(outbox)


class OutboxRepository(Repository):
    __slots__ = ("added",)

    def __init__(self, conn: AsyncConnection) -> None:
        super().__init__(conn)
        self.added = 0
        """Rows added in this transaction; the database wakes the relay after commit."""

    async def add(self, topic: str, key: str, payload: bytes, headers: Mapping[str, str]) -> int:
        """Insert one message in the caller's transaction; returns its id."""
        result = await self._conn.execute(
            _INSERT,
            {
                "topic": topic,
                "key": key,
                "payload": payload,
                "headers": dict(headers),
                "created_at": utcnow(),
            },
        )
        self.added += 1
        primary_key = result.inserted_primary_key
        if primary_key is None:
            raise RuntimeError("outbox insert returned no id")
        return int(primary_key[0])
