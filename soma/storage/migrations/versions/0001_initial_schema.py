"""Initial schema: tenants, keys, agents, sessions, messages, runs, events, tools, outbox, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types are spelled out here (not imported from tables.py) so this revision never changes.
ID = sa.String(64)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

_NOTIFY_FUNCTION = """
CREATE FUNCTION soma_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('soma_outbox', '');
    RETURN NULL;
END $$
"""
_NOTIFY_TRIGGER = """
CREATE TRIGGER soma_outbox_notify AFTER INSERT ON outbox
FOR EACH STATEMENT EXECUTE FUNCTION soma_outbox_notify()
"""


def _id() -> sa.Column[Any]:
    return sa.Column("id", ID, nullable=False)


def _tenant() -> sa.Column[Any]:
    return sa.Column("tenant_id", ID, nullable=False)


def _created() -> sa.Column[Any]:
    return sa.Column("created_at", TS, nullable=False)


def _counter(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)


def _pk(table: str, *columns: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*(columns or ("id",)), name=op.f(f"pk_{table}"))


def _fk(table: str, column: str, target: str, ondelete: str | None = "CASCADE") -> Any:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def _tenant_fk(table: str) -> Any:
    return _fk(table, "tenant_id", "tenants")


def _unique(table: str, *columns: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(*columns, name=op.f(f"uq_{table}_{'_'.join(columns)}"))


def _index(table: str, *columns: str) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns))


def upgrade() -> None:
    op.create_table(
        "tenants",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        _created(),
        _pk("tenants"),
        _unique("tenants", "name"),
    )
    op.create_table(
        "api_keys",
        _id(),
        _tenant(),
        sa.Column("prefix", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(255), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", JSON, nullable=False),
        _created(),
        sa.Column("revoked_at", TS, nullable=True),
        _pk("api_keys"),
        _tenant_fk("api_keys"),
        _unique("api_keys", "prefix"),
    )
    _index("api_keys", "tenant_id", "id")
    op.create_table(
        "agents",
        _id(),
        _tenant(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("tools", JSON, nullable=False),
        sa.Column("memory", sa.Boolean(), nullable=False),
        sa.Column("settings", JSON, nullable=False),
        _created(),
        sa.Column("updated_at", TS, nullable=False),
        _pk("agents"),
        _tenant_fk("agents"),
        _unique("agents", "tenant_id", "name"),
    )
    op.create_table(
        "sessions",
        _id(),
        _tenant(),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("title", sa.String(500), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        _created(),
        sa.Column("deleted_at", TS, nullable=True),
        _pk("sessions"),
        _tenant_fk("sessions"),
    )
    _index("sessions", "tenant_id", "id")
    op.create_table(
        "messages",
        _id(),
        _tenant(),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tool_calls", JSON, nullable=True),
        sa.Column("tool_call_id", sa.String(128), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        _created(),
        _pk("messages"),
        _tenant_fk("messages"),
        _fk("messages", "session_id", "sessions"),
        _unique("messages", "idempotency_key"),
        _unique("messages", "session_id", "seq"),
    )
    _index("messages", "run_id")
    op.create_table(
        "runs",
        _id(),
        _tenant(),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("message_id", ID, nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        _counter("attempt"),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.Column("usage", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _created(),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        _pk("runs"),
        _tenant_fk("runs"),
        _fk("runs", "session_id", "sessions"),
        _fk("runs", "message_id", "messages", ondelete=None),
    )
    _index("runs", "status", "lease_expires_at")
    _index("runs", "session_id", "created_at")
    _index("runs", "tenant_id", "id")
    op.create_table(
        "run_events",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        _tenant(),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", JSON, nullable=False),
        _created(),
        _pk("run_events", "run_id", "seq"),
        _tenant_fk("run_events"),
        _fk("run_events", "run_id", "runs"),
    )
    op.create_table(
        "tool_calls",
        _id(),
        _tenant(),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("args", JSON, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("approval_id", ID, nullable=True),
        _created(),
        sa.Column("finished_at", TS, nullable=True),
        _pk("tool_calls"),
        _tenant_fk("tool_calls"),
        _fk("tool_calls", "run_id", "runs"),
        _unique("tool_calls", "run_id", "call_id"),
    )
    op.create_table(
        "approvals",
        _id(),
        _tenant(),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("tool_call_id", ID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        _created(),
        sa.Column("decided_at", TS, nullable=True),
        _pk("approvals"),
        _tenant_fk("approvals"),
        _fk("approvals", "run_id", "runs"),
        _fk("approvals", "tool_call_id", "tool_calls"),
        _unique("approvals", "tool_call_id"),
    )
    _index("approvals", "tenant_id", "status", "id")
    op.create_table(
        "uploads",
        _id(),
        _tenant(),
        sa.Column("session_id", ID, nullable=True),
        sa.Column("filename", sa.String(500), nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        _created(),
        sa.Column("deleted_at", TS, nullable=True),
        _pk("uploads"),
        _tenant_fk("uploads"),
        _fk("uploads", "session_id", "sessions", ondelete="SET NULL"),
    )
    _index("uploads", "tenant_id", "id")
    op.create_table(
        "memories",
        _id(),
        _tenant(),
        sa.Column("agent_id", ID, nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        _created(),
        _pk("memories"),
        _tenant_fk("memories"),
    )
    _index("memories", "tenant_id", "content_hash")
    _index("memories", "tenant_id", "agent_id")
    op.create_table(
        "outbox",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", JSON, nullable=False),
        _created(),
        sa.Column("sent_at", TS, nullable=True),
        _pk("outbox"),
        sqlite_autoincrement=True,
    )
    _index("outbox", "sent_at", "id")
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        _tenant(),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("resource", sa.String(500), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        _created(),
        _pk("audit_log"),
        _tenant_fk("audit_log"),
        sqlite_autoincrement=True,
    )
    _index("audit_log", "tenant_id", "id")
    op.create_table(
        "dead_letters",
        _id(),
        sa.Column("tenant_id", ID, nullable=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _created(),
        sa.Column("replayed_at", TS, nullable=True),
        _pk("dead_letters"),
    )
    _index("dead_letters", "tenant_id", "id")
    if op.get_bind().dialect.name == "postgresql":
        # The NOTIFY rides in the writer's transaction, so other replicas' relays wake on commit.
        op.execute(_NOTIFY_FUNCTION)
        op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS soma_outbox_notify ON outbox")
        op.execute("DROP FUNCTION IF EXISTS soma_outbox_notify()")
    for table in (
        "dead_letters",
        "audit_log",
        "outbox",
        "memories",
        "uploads",
        "approvals",
        "tool_calls",
        "run_events",
        "runs",
        "messages",
        "sessions",
        "agents",
        "api_keys",
        "tenants",
    ):
        op.drop_table(table)
