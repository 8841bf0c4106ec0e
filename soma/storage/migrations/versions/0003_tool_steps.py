"""Tool steps: a run counts its tool steps; a tool call knows when it started and which ids
its events take.

`runs.steps` separates a run's claims that continue after a tool step from retries (only those
count against `runtime.max_attempts`). `tool_calls.started_at` tells an interrupted call from
one still running; `position` and `event_base` give each call of a step its own event ids.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(
            sa.Column("steps", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    with op.batch_alter_table("tool_calls") as batch:
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("position", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(
            sa.Column("event_base", BIG_ID, server_default=sa.text("0"), nullable=False)
        )
    op.create_index(op.f("ix_tool_calls_run_id"), "tool_calls", ["run_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_tool_calls_run_id"), table_name="tool_calls")
    with op.batch_alter_table("tool_calls") as batch:
        batch.drop_column("event_base")
        batch.drop_column("position")
        batch.drop_column("started_at")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("steps")
