"""Long-term memory: memories with scope, kind, supersession and an embedding; the runs the
memory pipeline handled; the end user a session talks to.

PostgreSQL needs the pgvector extension: memories carry a `vector` of any dimension; the memory
service creates the HNSW index of its embedder's dimension when it starts (soma/memory/index.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import VECTOR
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(64)
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
EMBEDDING = sa.LargeBinary().with_variant(VECTOR(), "postgresql")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    # The table of revision 0001 was never written to: it is replaced, not altered.
    op.drop_table("memories")
    op.create_table(
        "memories",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("end_user", sa.String(200), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("source_id", ID, nullable=True),
        sa.Column("embedding", EMBEDDING, nullable=False),
        sa.Column("embedding_model", sa.String(200), nullable=False),
        sa.Column("embedding_dim", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("superseded_by", ID, nullable=True),
        sa.Column("superseded_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memories")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_memories_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        op.f("ix_memories_tenant_id_agent_id_end_user_created_at"),
        "memories",
        ["tenant_id", "agent_id", "end_user", "created_at"],
    )
    op.create_table(
        "memory_ingests",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("stored", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_memory_ingests")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_memory_ingests_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
    )
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("end_user", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("end_user")
    op.drop_table("memory_ingests")
    op.drop_table("memories")
    op.create_table(
        "memories",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memories")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_memories_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        op.f("ix_memories_tenant_id_content_hash"), "memories", ["tenant_id", "content_hash"]
    )
    op.create_index(op.f("ix_memories_tenant_id_agent_id"), "memories", ["tenant_id", "agent_id"])
