"""Alembic environment: migrations always run on a connection handed in by `migrate()`."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from soma.storage.tables import metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite cannot ALTER most things in place; batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise RuntimeError(
        "soma migrations run through soma.storage.migrate, which passes a connection"
    )
run_migrations(_connection)
