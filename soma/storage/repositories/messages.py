"""Messages of a session, numbered by `seq`; an idempotency key makes redelivery harmless."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Row

from soma.core.clock import utcnow
from soma.core.errors import ConflictError, NotFoundError
from soma.core.ids import new_id
from soma.storage.repositories.base import (
    DIALECTS,
    Page,
    Repository,
    check_limit,
    dialect_insert,
    fetch_page,
    parse_int_cursor,
)
from soma.storage.tables import messages, sessions


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    tenant_id: str
    session_id: str
    run_id: str | None
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    metadata: dict[str, Any]
    seq: int
    idempotency_key: str | None
    created_at: datetime


def _message(row: Row[Any]) -> Message:
    return Message(
        id=row.id,
        tenant_id=row.tenant_id,
        session_id=row.session_id,
        run_id=row.run_id,
        role=row.role,
        content=row.content,
        tool_calls=row.tool_calls,
        tool_call_id=row.tool_call_id,
        metadata=dict(row.metadata),
        seq=row.seq,
        idempotency_key=row.idempotency_key,
        created_at=row.created_at,
    )


def _seq_cursor(message: Message) -> str:
    return str(message.seq)


_NEXT_SEQ = (
    update(sessions)
    .where(
        sessions.c.id == bindparam("b_session"),
        sessions.c.tenant_id == bindparam("b_tenant"),
        sessions.c.deleted_at.is_(None),
    )
    .values(last_seq=sessions.c.last_seq + 1)
    .returning(sessions.c.last_seq)
)
"""Numbers the message and locks the session row (appends never race); built once."""
_INSERT = {d: dialect_insert(d, messages).on_conflict_do_nothing() for d in DIALECTS}


class MessageRepository(Repository):
    __slots__ = ()

    async def create(
        self,
        tenant_id: str,
        session_id: str,
        *,
        role: str,
        content: str,
        run_id: str | None = None,
        tool_calls: builtins.list[dict[str, Any]] | None = None,
        tool_call_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        message_id: str | None = None,
    ) -> tuple[Message, bool]:
        """Append to a live session with the next `seq`; returns `(message, inserted)`.

        A reused idempotency key returns the existing message with `inserted=False`.
        Concurrent appends to one session serialise on the session row.
        NotFoundError: no such live session for this tenant.
        """
        if idempotency_key is not None:
            existing = await self.get_by_idempotency_key(tenant_id, idempotency_key)
            if existing is not None:
                return existing, False
        seq = (
            await self._conn.execute(_NEXT_SEQ, {"b_session": session_id, "b_tenant": tenant_id})
        ).scalar()
        if seq is None:
            raise NotFoundError(f"session {session_id} not found")
        values: dict[str, Any] = {
            "id": message_id or new_id(),
            "tenant_id": tenant_id,
            "session_id": session_id,
            "run_id": run_id,
            "role": role,
            "content": content,
            "tool_calls": tool_calls,
            "tool_call_id": tool_call_id,
            "metadata": dict(metadata or {}),
            "seq": seq,
            "idempotency_key": idempotency_key,
            "created_at": utcnow(),
        }
        inserted = await self._conn.execute(_INSERT[self._conn.dialect.name], values)
        if inserted.rowcount == 0:
            raise ConflictError(f"message {values['id']} already exists")
        return Message(**values), True

    async def get(self, tenant_id: str, message_id: str) -> Message | None:
        query = select(messages).where(
            messages.c.tenant_id == tenant_id, messages.c.id == message_id
        )
        row = (await self._conn.execute(query)).first()
        return None if row is None else _message(row)

    async def get_by_idempotency_key(self, tenant_id: str, key: str) -> Message | None:
        query = select(messages).where(
            messages.c.tenant_id == tenant_id, messages.c.idempotency_key == key
        )
        row = (await self._conn.execute(query)).first()
        return None if row is None else _message(row)

    async def list(
        self, tenant_id: str, session_id: str, limit: int, cursor: str | None = None
    ) -> Page[Message]:
        """Oldest first, by `seq`; the cursor is the last `seq` seen."""
        query = select(messages).where(
            messages.c.tenant_id == tenant_id, messages.c.session_id == session_id
        )
        return await fetch_page(
            self._conn,
            query,
            messages.c.seq,
            limit,
            cursor,
            _message,
            parse=parse_int_cursor,
            render=_seq_cursor,
        )

    async def history(
        self, tenant_id: str, session_id: str, *, limit: int, up_to_seq: int | None = None
    ) -> builtins.list[Message]:
        """The newest `limit` messages (with seq <= `up_to_seq` when given), oldest first."""
        query = select(messages).where(
            messages.c.tenant_id == tenant_id, messages.c.session_id == session_id
        )
        if up_to_seq is not None:
            query = query.where(messages.c.seq <= up_to_seq)
        query = query.order_by(messages.c.seq.desc()).limit(check_limit(limit))
        rows = (await self._conn.execute(query)).all()
        return [_message(row) for row in reversed(rows)]

    async def list_for_run(self, tenant_id: str, run_id: str) -> builtins.list[Message]:
        query = (
            select(messages)
            .where(messages.c.tenant_id == tenant_id, messages.c.run_id == run_id)
            .order_by(messages.c.seq)
        )
        return [_message(row) for row in (await self._conn.execute(query)).all()]
