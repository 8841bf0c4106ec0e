"""The schema (ARCHITECTURE §5): one SQLAlchemy Core MetaData for SQLite and PostgreSQL.

Migrations in `soma/storage/migrations/versions` create exactly this; a test compares them.
"""

from __future__ import annotations

from typing import Any

from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from soma.storage.types import UTCDateTime, json_type

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

ID_LENGTH = 64
BIG_ID = BigInteger().with_variant(Integer(), "sqlite")
"""Autoincrement keys: INTEGER on SQLite (rowid alias), BIGINT on PostgreSQL."""
EMBEDDING = LargeBinary().with_variant(VECTOR(), "postgresql")
"""pgvector's `vector` on PostgreSQL (any dimension: the HNSW indexes cast to one); float32
bytes on SQLite, searched by the memory service's in-process index."""


def _id(**kwargs: Any) -> Column[Any]:
    return Column("id", String(ID_LENGTH), primary_key=True, **kwargs)


def _tenant() -> Column[Any]:
    return Column(
        "tenant_id",
        String(ID_LENGTH),
        ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
    )


def _created() -> Column[Any]:
    return Column("created_at", UTCDateTime(), nullable=False)


def _counter(name: str) -> Column[Any]:
    return Column(name, Integer, nullable=False, server_default=text("0"))


tenants = Table(
    "tenants",
    metadata,
    _id(),
    Column("name", String(200), nullable=False, unique=True),
    _created(),
    # Overrides of the `limits` settings (PATCH /v1/admin/tenants/{id}).
    Column("limits", json_type(), nullable=False, server_default=text("'{}'")),
)

api_keys = Table(
    "api_keys",
    metadata,
    _id(),
    _tenant(),
    Column("prefix", String(64), nullable=False, unique=True),
    Column("secret_hash", String(255), nullable=False),
    Column("name", String(200), nullable=False),
    Column("scopes", json_type(), nullable=False),
    _created(),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Index(None, "tenant_id", "id"),
)

agents = Table(
    "agents",
    metadata,
    _id(),
    _tenant(),
    Column("name", String(200), nullable=False),
    Column("instructions", Text, nullable=False),
    Column("model", String(200), nullable=False),
    Column("tools", json_type(), nullable=False),
    Column("memory", Boolean, nullable=False),
    Column("settings", json_type(), nullable=False),
    _created(),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("tenant_id", "name"),
)

sessions = Table(
    "sessions",
    metadata,
    _id(),
    _tenant(),
    # No FK to agents: deleting an agent keeps the history of its sessions and runs.
    Column("agent_id", String(ID_LENGTH), nullable=False),
    Column("title", String(500), nullable=True),
    Column("metadata", json_type(), nullable=False),
    _created(),
    Column("deleted_at", UTCDateTime(), nullable=True),
    # The end user the session talks to: whose memories its turns recall and keep.
    Column("end_user", String(200), nullable=True),
    # The last message number handed out; appends lock this row, so numbering never races.
    _counter("last_seq"),
    Index(None, "tenant_id", "id"),
)

messages = Table(
    "messages",
    metadata,
    _id(),
    _tenant(),
    Column(
        "session_id",
        String(ID_LENGTH),
        ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # runs.message_id points here, so this side carries no FK (no cycle).
    Column("run_id", String(ID_LENGTH), nullable=True),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("tool_calls", json_type(), nullable=True),
    Column("tool_call_id", String(128), nullable=True),
    Column("metadata", json_type(), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("idempotency_key", String(255), nullable=True, unique=True),
    _created(),
    UniqueConstraint("session_id", "seq"),
    Index(None, "run_id"),
)

runs = Table(
    "runs",
    metadata,
    _id(),
    _tenant(),
    Column(
        "session_id",
        String(ID_LENGTH),
        ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("agent_id", String(ID_LENGTH), nullable=False),
    Column("message_id", String(ID_LENGTH), ForeignKey("messages.id"), nullable=True),
    Column("status", String(32), nullable=False),
    _counter("attempt"),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("usage", json_type(), nullable=True),
    Column("error", Text, nullable=True),
    _created(),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    # The seq of the run's user message: a session's runs execute one at a time in this order.
    _counter("seq"),
    # Tool steps taken: claims that continue after one are not retries (max_attempts).
    _counter("steps"),
    Index(None, "status", "lease_expires_at"),
    Index(None, "session_id", "created_at"),
    Index(None, "tenant_id", "id"),
    Index(
        None,
        "session_id",
        "seq",
        postgresql_where=text("finished_at IS NULL"),
        sqlite_where=text("finished_at IS NULL"),
    ),
)

run_events = Table(
    "run_events",
    metadata,
    Column(
        "run_id",
        String(ID_LENGTH),
        ForeignKey("runs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    _tenant(),
    Column("type", String(64), nullable=False),
    Column("data", json_type(), nullable=False),
    _created(),
)

tool_calls = Table(
    "tool_calls",
    metadata,
    _id(),
    _tenant(),
    Column("run_id", String(ID_LENGTH), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("session_id", String(ID_LENGTH), nullable=False),
    Column("call_id", String(128), nullable=False),
    Column("name", String(200), nullable=False),
    Column("args", json_type(), nullable=False),
    Column("status", String(32), nullable=False),
    Column("result", json_type(), nullable=True),
    Column("error", Text, nullable=True),
    Column("approval_id", String(ID_LENGTH), nullable=True),
    _created(),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("started_at", UTCDateTime(), nullable=True),
    # The call's place in its step, and the first of the event ids its events take.
    _counter("position"),
    Column("event_base", BIG_ID, nullable=False, server_default=text("0")),
    UniqueConstraint("run_id", "call_id"),
    Index(None, "run_id"),
)

approvals = Table(
    "approvals",
    metadata,
    _id(),
    _tenant(),
    Column("run_id", String(ID_LENGTH), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column(
        "tool_call_id",
        String(ID_LENGTH),
        ForeignKey("tool_calls.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("decided_by", String(200), nullable=True),
    _created(),
    Column("decided_at", UTCDateTime(), nullable=True),
    Index(None, "tenant_id", "status", "id"),
)

uploads = Table(
    "uploads",
    metadata,
    _id(),
    _tenant(),
    Column(
        "session_id",
        String(ID_LENGTH),
        ForeignKey("sessions.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("filename", String(500), nullable=False),
    Column("content_type", String(200), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("path", String(1000), nullable=False),
    Column("metadata", json_type(), nullable=False),
    _created(),
    Column("deleted_at", UTCDateTime(), nullable=True),
    Index(None, "tenant_id", "id"),
)

memories = Table(
    "memories",
    metadata,
    _id(),
    _tenant(),
    # No FK to agents: a deleted agent's memories stay exportable until deleted themselves.
    Column("agent_id", String(ID_LENGTH), nullable=False),
    # The end user a memory belongs to (the application's name for them); NULL: the agent's.
    Column("end_user", String(200), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("tags", json_type(), nullable=False),
    Column("source", String(16), nullable=False),
    Column("source_id", String(ID_LENGTH), nullable=True),
    Column("embedding", EMBEDDING, nullable=False),
    Column("embedding_model", String(200), nullable=False),
    Column("embedding_dim", Integer, nullable=False),
    _created(),
    Column("superseded_by", String(ID_LENGTH), nullable=True),
    Column("superseded_at", UTCDateTime(), nullable=True),
    Index(None, "tenant_id", "agent_id", "end_user", "created_at"),
)

memory_ingests = Table(
    "memory_ingests",
    metadata,
    # One row per completed run the pipeline handled: a redelivery finds it and stores nothing.
    Column("run_id", String(ID_LENGTH), primary_key=True),
    _tenant(),
    Column("stored", Integer, nullable=False),
    _created(),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    Column("topic", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", json_type(), nullable=False),
    _created(),
    Column("sent_at", UTCDateTime(), nullable=True),
    Index(None, "sent_at", "id"),
    # Ids must never be reused after a prune, so the relay's order by id stays meaningful.
    sqlite_autoincrement=True,
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    _tenant(),
    Column("actor", String(200), nullable=False),
    Column("action", String(200), nullable=False),
    Column("resource", String(500), nullable=False),
    Column("data", json_type(), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    _created(),
    Index(None, "tenant_id", "id"),
    sqlite_autoincrement=True,
)

audit_heads = Table(
    "audit_heads",
    metadata,
    # The last hash of each tenant's chain: PostgreSQL appends update it (see audit_sql).
    Column(
        "tenant_id",
        String(ID_LENGTH),
        ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("prev", String(64), nullable=False),
    Column("head", String(64), nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    _id(),
    # Not a FK: a poison message may name a tenant that does not exist.
    Column("tenant_id", String(ID_LENGTH), nullable=True),
    Column("topic", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", json_type(), nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    _created(),
    Column("replayed_at", UTCDateTime(), nullable=True),
    Index(None, "tenant_id", "id"),
    Column("last_seen_at", UTCDateTime(), nullable=True),
)
