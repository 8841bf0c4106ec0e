"""Run the Alembic migrations in code, safely when several processes start at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from soma.storage.engine import SQLITE_BEGIN_OPTION, is_postgres, is_sqlite

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x736F_6D61_6D69_6772
"""pg advisory lock key ("somamigr") serialising migrations across replicas."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config built in code (no alembic.ini), optionally bound to a connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration revisions under {MIGRATIONS_DIR}")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def migrate(engine: AsyncEngine) -> str:
    """Upgrade to head (a no-op when already there) and return the head revision."""
    revision = await _locked(engine, lambda sync: command.upgrade(alembic_config(sync), "head"))
    if revision is None:
        raise RuntimeError("migration finished without a schema revision")
    return revision


async def downgrade(engine: AsyncEngine, revision: str) -> str | None:
    """Downgrade to `revision` (`base` drops everything); returns where the schema is now."""
    return await _locked(engine, lambda sync: command.downgrade(alembic_config(sync), revision))


async def _locked(engine: AsyncEngine, step: Callable[[Connection], None]) -> str | None:
    """Run one Alembic command in a transaction that other migrating processes wait for."""
    async with engine.connect() as conn:
        if is_sqlite(engine):
            # The write lock from BEGIN IMMEDIATE makes a second process wait, then find head.
            conn = await conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        async with conn.begin():
            if is_postgres(engine):
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            await conn.run_sync(step)
            return await conn.run_sync(_current)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
