"""Governance: tenant limits, the audit chain's head per tenant, when a dead letter was last seen.

`tenants.limits` holds a tenant's overrides of the `limits` settings (PATCH
/v1/admin/tenants/{id}). `audit_heads` is the last hash of each tenant's audit chain: on
PostgreSQL an append updates it, and the update waits for (and then sees) the previous append,
so concurrent appends chain one after another. Existing chains get their head from their last
row.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(64)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
GENESIS = "0" * 64


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("limits", JSON, server_default=sa.text("'{}'"), nullable=False))
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("last_seen_at", TS, nullable=True))
    op.create_table(
        "audit_heads",
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("prev", sa.String(64), nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_audit_heads")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_audit_heads_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
    )
    op.execute(
        f"INSERT INTO audit_heads (tenant_id, prev, head) SELECT t.id, '{GENESIS}', "
        f"COALESCE((SELECT a.hash FROM audit_log AS a WHERE a.tenant_id = t.id "
        f"ORDER BY a.id DESC LIMIT 1), '{GENESIS}') FROM tenants AS t"
    )


def downgrade() -> None:
    op.drop_table("audit_heads")
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("last_seen_at")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("limits")
