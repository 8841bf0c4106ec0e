"""Rows every raw SQLite store writes (messages, run events, outbox), inside a loop job.

Statements and conversions only: the caller's job is the transaction (`SqliteLoop`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from soma.bus.port import OutgoingMessage
from soma.runs.events import RunEvent
from soma.storage.audit_chain import AuditRecord
from soma.storage.audit_sql import SQLITE_APPEND
from soma.storage.repositories.messages import Message
from soma.storage.rows import MESSAGE, columns, json_text, sqlite_ts

APPEND_MESSAGE = (
    f"INSERT INTO messages ({columns(MESSAGE)}) VALUES ({', '.join('?' * len(MESSAGE))})"
)
NEXT_SEQ = (
    "UPDATE sessions SET last_seq = last_seq + 1 "
    "WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL RETURNING last_seq"
)
"""Numbers a message of a live session (messages take the session's next number)."""
_INSERT_EVENT = (
    "INSERT INTO run_events (run_id, seq, tenant_id, type, data, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_INSERT_OUTBOX = (
    "INSERT INTO outbox (topic, key, payload, headers, created_at) VALUES (?, ?, ?, ?, ?)"
)


def message_params(m: Message) -> tuple[Any, ...]:
    """`APPEND_MESSAGE`'s parameters, in `MESSAGE` order."""
    return (m.id, m.tenant_id, m.session_id, m.run_id, m.role, m.content, json_text(m.tool_calls),
            m.tool_call_id, json_text(m.metadata), m.seq, m.idempotency_key,
            sqlite_ts(m.created_at))  # fmt: skip


def append_event(
    conn: sqlite3.Connection, run_id: str, tenant_id: str, event: RunEvent, at: str | None
) -> None:
    """A milestone at its own id; one already there (a redelivery) stays."""
    data = json_text(event.data)
    conn.execute(_INSERT_EVENT, (run_id, event.id, tenant_id, event.type, data, at))


def add_outbox(conn: sqlite3.Connection, message: OutgoingMessage, at: str | None) -> None:
    headers = json_text(dict(message.headers))
    conn.execute(_INSERT_OUTBOX, (message.topic, message.key, message.value, headers, at))


def append_audit(conn: sqlite3.Connection, record: AuditRecord) -> None:
    """Chain `record` after its tenant's last entry (the writer holds the one write lock)."""
    r = record
    params = (r.tenant_id, r.actor, r.action, r.resource, json_text(r.data), r.body,
              sqlite_ts(r.created_at))  # fmt: skip
    conn.execute(SQLITE_APPEND, params)


def one(conn: sqlite3.Connection, sql: str, params: Any) -> Any:
    """The first row, or None."""
    rows = conn.execute(sql, params).fetchall()
    return rows[0] if rows else None
