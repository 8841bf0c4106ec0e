"""Migrations on SQLite and PostgreSQL: idempotent, concurrent-safe, identical to tables.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soma.storage import create_engine, current_revision, head_revision, migrate
from soma.storage.engine import SQLITE_BUSY_TIMEOUT_MS
from soma.storage.migrate import alembic_config, downgrade
from soma.storage.tables import metadata

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
_MIGRATE_SCRIPT = """
import asyncio, sys
from soma.storage import create_engine, migrate

async def main():
    engine = create_engine(sys.argv[1], 2, False)
    try:
        print(await migrate(engine))
    finally:
        await engine.dispose()

asyncio.run(main())
"""


async def schema_differences(engine: AsyncEngine) -> list[object]:
    """What Alembic's autogenerate sees between the database and tables.py."""
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), metadata
            )
        )


async def test_migrate_twice_is_a_no_op_the_second_time(database_url: str) -> None:
    engine = create_engine(database_url, 2, False)
    try:
        assert await current_revision(engine) is None
        assert await migrate(engine) == head_revision()
        assert await migrate(engine) == head_revision()
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        assert [row[0] for row in rows] == [head_revision()]
    finally:
        await engine.dispose()


async def test_migrated_schema_matches_the_table_definitions(database_url: str) -> None:
    engine = create_engine(database_url, 2, False)
    try:
        await migrate(engine)
        assert await schema_differences(engine) == []
    finally:
        await engine.dispose()


async def test_two_processes_migrating_at_once_both_succeed(database_url: str) -> None:
    command = [sys.executable, "-c", _MIGRATE_SCRIPT, database_url]
    processes = [
        await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    results = [await process.communicate() for process in processes]
    for process, (out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err.decode()
        assert out.decode().strip() == head_revision()
    engine = create_engine(database_url, 2, False)
    try:
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM alembic_version"))).scalar()
            tables = await conn.run_sync(lambda sync: sync.dialect.get_table_names(sync))
        assert count == 1
        assert set(metadata.tables) <= set(tables)
    finally:
        await engine.dispose()


async def test_sqlite_connections_use_wal_and_enforce_foreign_keys(
    sqlite_database_url: str,
) -> None:
    engine = create_engine(sqlite_database_url, 2, False)
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: (await conn.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            }
        assert pragmas["journal_mode"] == "wal"
        assert pragmas["foreign_keys"] == 1
        assert pragmas["synchronous"] == 1  # NORMAL
        assert pragmas["busy_timeout"] == SQLITE_BUSY_TIMEOUT_MS
    finally:
        await engine.dispose()


async def test_postgres_outbox_inserts_notify_through_a_trigger(pg_database_url: str) -> None:
    engine = create_engine(pg_database_url, 2, False)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            query = text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'outbox'::regclass")
            names = (await conn.execute(query)).scalars().all()
        assert "soma_outbox_notify" in names
    finally:
        await engine.dispose()


async def test_every_migration_downgrades_to_base_and_upgrades_again(database_url: str) -> None:
    # Newest first: each step down must land exactly on the revision before it.
    revisions = [s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()]
    engine = create_engine(database_url, 2, False)
    try:
        assert await migrate(engine) == head_revision()
        for below in [*revisions[1:], None]:
            assert await downgrade(engine, "-1") == below
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: sync.dialect.get_table_names(sync))
            if engine.dialect.name == "postgresql":
                query = text("SELECT count(*) FROM pg_proc WHERE proname = 'soma_outbox_notify'")
                assert (await conn.execute(query)).scalar() == 0
        assert set(tables) <= {"alembic_version"}
        assert await migrate(engine) == head_revision()
        assert await downgrade(engine, "base") is None
        assert await migrate(engine) == head_revision()
        assert await schema_differences(engine) == []
    finally:
        await engine.dispose()
