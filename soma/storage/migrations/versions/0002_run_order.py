"""Per-session numbering without max() scans, and the order of a session's runs.

`sessions.last_seq` is the last message number handed out in the session (appends lock the
row, so numbering never races); `runs.seq` is the number of the run's user message, the order
in which a session's runs execute; a partial index keeps the unfinished runs of a session at
hand for the one-at-a-time check.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("finished_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(
            sa.Column("last_seq", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(
            sa.Column("seq", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    op.execute(
        "UPDATE sessions SET last_seq = COALESCE("
        "(SELECT MAX(m.seq) FROM messages m WHERE m.session_id = sessions.id), 0)"
    )
    op.execute(
        "UPDATE runs SET seq = COALESCE("
        "(SELECT m.seq FROM messages m WHERE m.id = runs.message_id), 0)"
    )
    op.create_index(
        op.f("ix_runs_session_id_seq"),
        "runs",
        ["session_id", "seq"],
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_runs_session_id_seq"), table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("seq")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("last_seq")
