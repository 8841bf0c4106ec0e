"""Messages of a session, numbered by `seq`; an idempotency key makes redelivery harmless."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
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
    next_number,
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


def _append_statement(dialect: str) -> Any:
    """INSERT ... SELECT: numbers the message and checks the live session in one statement."""
    columns = [c.name for c in messages.c]
    values = [
        next_number(messages.c.seq, messages.c.session_id)
        if name == "seq"
        else bindparam(name, type_=messages.c[name].type)
        for name in columns
    ]
    source = select(*values).where(
        sessions.c.id == bindparam("session_id"),
        sessions.c.tenant_id == bindparam("tenant_id"),
        sessions.c.deleted_at.is_(None),
    )
    return (
        dialect_insert(dialect, messages)
        .from_select(columns, source)
        .on_conflict_do_nothing()
        .returning(messages.c.seq)
    )


# Built once: reusing the construct skips rebuilding it and its cache key on the hot path.
_APPEND = {dialect: _append_statement(dialect) for dialect in DIALECTS}
_APPEND_ATTEMPTS = 10


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
        Concurrent appends to one session serialise: the later one waits (on the unique
        `(session_id, seq)`) until the earlier transaction ends, then sees what it committed.
        NotFoundError: no such live session for this tenant.
        """
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
            "idempotency_key": idempotency_key,
            "created_at": utcnow(),
        }
        statement = _APPEND[self._conn.dialect.name]
        for _ in range(_APPEND_ATTEMPTS):
            seq = (await self._conn.execute(statement, values)).scalar()
            if seq is not None:
                return Message(seq=seq, **values), True
            # Nothing inserted: a known key, a missing session, or a concurrent append took seq.
            if idempotency_key is not None:
                existing = await self.get_by_idempotency_key(tenant_id, idempotency_key)
                if existing is not None:
                    return existing, False
            if not await self._session_is_live(tenant_id, session_id):
                raise NotFoundError(f"session {session_id} not found")
            if await self.get(tenant_id, values["id"]) is not None:
                raise ConflictError(f"message {values['id']} already exists")
        raise ConflictError(f"could not append to session {session_id}: too much contention")

    async def _session_is_live(self, tenant_id: str, session_id: str) -> bool:
        query = select(sessions.c.id).where(
            sessions.c.tenant_id == tenant_id,
            sessions.c.id == session_id,
            sessions.c.deleted_at.is_(None),
        )
        return (await self._conn.execute(query)).first() is not None

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
