"""The entry point's release modes: `--version`, `--migrate-only` and `--downgrade-to`."""

from __future__ import annotations

from pathlib import Path

import pytest

from soma.storage import create_engine, current_revision, head_revision
from soma.version import VERSION
from tests.e2e.test_orchestrator_process import run_cli

pytestmark = pytest.mark.e2e


def test_version_is_the_release_version(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"python -m orchestrator.main {VERSION}"


async def test_migrate_only_upgrades_to_head_and_downgrade_to_base_empties(
    tmp_path: Path, database_url: str
) -> None:
    env = {"SOMA_DATABASE__URL": database_url, "SOMA_OBSERVABILITY__LOG_FORMAT": "text"}
    migrated = run_cli(tmp_path, "--migrate-only", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert f"is at revision {head_revision()} (release {VERSION})" in migrated.stdout
    # Nothing but the schema: no bootstrap key, no listener, no data dir of its own.
    assert not (tmp_path / ".soma" / "admin.key").exists()
    engine = create_engine(database_url, 1, False)
    try:
        assert await current_revision(engine) == head_revision()
        again = run_cli(tmp_path, "--migrate-only", env=env)
        assert again.returncode == 0, again.stderr
        rolled_back = run_cli(tmp_path, "--downgrade-to", "base", env=env)
        assert rolled_back.returncode == 0, rolled_back.stderr
        assert "is at revision base" in rolled_back.stdout
        assert await current_revision(engine) is None
    finally:
        await engine.dispose()


def test_migrate_only_fails_with_one_line_when_the_database_is_unreachable(
    tmp_path: Path,
) -> None:
    url = "postgresql+asyncpg://soma:hunter2@127.0.0.1:1/soma"
    result = run_cli(tmp_path, "--migrate-only", env={"SOMA_DATABASE__URL": url})
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "database: cannot connect to" in lines[0]
    assert "hunter2" not in result.stdout + result.stderr
