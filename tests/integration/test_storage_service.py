"""The `database` service: start (dir, connect, migrate), health, and loud startup failures."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url

from soma.config import Settings
from soma.config.settings import DatabaseSettings
from soma.core.errors import StartupError
from soma.core.service import HealthStatus
from soma.observability.metrics import Metrics
from soma.storage import DatabaseService, head_revision

pytestmark = pytest.mark.integration


def _settings(database_url: str, tmp_path: Path) -> Settings:
    if database_url.startswith("sqlite"):
        # The default URL: a file in a data dir that does not exist yet.
        return Settings(data_dir=tmp_path / "nested" / "data")
    return Settings(data_dir=tmp_path, database=DatabaseSettings(url=SecretStr(database_url)))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_start_migrates_and_health_reports_the_head(
    database_url: str, tmp_path: Path
) -> None:
    service = DatabaseService(_settings(database_url, tmp_path), Metrics())
    await service.start()
    try:
        health = await service.health()
        assert health.status is HealthStatus.HEALTHY
        assert health.detail == f"head {head_revision()}"
        async with service.database.transaction() as uow:
            tenant = await uow.tenants.create("default")
        async with service.database.read() as uow:
            assert await uow.tenants.get(tenant.id) == tenant
        async with service.outbox_store.leadership() as leading:
            assert leading
    finally:
        await service.stop()


async def test_health_is_unhealthy_when_the_schema_is_not_at_head(
    database_url: str, tmp_path: Path
) -> None:
    service = DatabaseService(_settings(database_url, tmp_path), Metrics())
    await service.start()
    try:
        async with service.engine.begin() as conn:
            await conn.execute(text("DELETE FROM alembic_version"))
        health = await service.health()
        assert health.status is HealthStatus.UNHEALTHY
        assert f"head {head_revision()}" in health.detail
    finally:
        await service.stop()


async def test_unreachable_postgres_fails_startup_with_one_line_and_no_password(
    tmp_path: Path,
) -> None:
    port = _closed_port()
    url = f"postgresql+asyncpg://soma:hunter2-secret@127.0.0.1:{port}/soma"
    service = DatabaseService(_settings(url, tmp_path), Metrics())
    with pytest.raises(StartupError) as raised:
        await service.start()
    await service.stop()
    message = str(raised.value)
    assert message.startswith(f"database: cannot connect to postgresql://127.0.0.1:{port}/soma: ")
    assert len(message) > len(f"database: cannot connect to postgresql://127.0.0.1:{port}/soma: ")
    assert "\n" not in message
    assert "hunter2" not in message


async def test_a_missing_postgres_database_fails_startup_naming_it(
    postgres_url: str, tmp_path: Path
) -> None:
    url = make_url(postgres_url).set(database="no_such_db", password="hunter2-secret")
    service = DatabaseService(
        _settings(url.render_as_string(hide_password=False), tmp_path), Metrics()
    )
    with pytest.raises(StartupError) as raised:
        await service.start()
    await service.stop()
    message = str(raised.value)
    assert message.startswith("database: cannot connect to postgresql://")
    assert "no_such_db" in message
    assert "\n" not in message and "hunter2" not in message


async def test_sqlite_start_fails_loudly_when_the_data_dir_cannot_be_created(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    service = DatabaseService(Settings(data_dir=blocker / "data"), Metrics())
    with pytest.raises(StartupError, match=r"^database: cannot create "):
        await service.start()
    await service.stop()
