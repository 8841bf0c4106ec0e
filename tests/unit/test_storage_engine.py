"""Storage pieces that need no database: engine construction, URLs, hashing, the wake signal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from soma.config import Settings
from soma.config.settings import DatabaseSettings
from soma.observability.metrics import Metrics
from soma.storage import DatabaseService, OutboxSignal, create_engine, describe_url, head_revision
from soma.storage.audit_chain import GENESIS_HASH, entry_hash
from soma.storage.migrate import MIGRATIONS_DIR


def test_constructing_engines_and_the_service_touches_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    create_engine(f"sqlite+aiosqlite:///{data_dir / 'x.db'}", 5, False)
    create_engine("postgresql+asyncpg://u:p@127.0.0.1:1/db", 5, False)
    service = DatabaseService(Settings(data_dir=data_dir), Metrics())
    assert service.name == "database"
    assert not (tmp_path / "nested").exists()


def test_unsupported_url_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL scheme"):
        create_engine("mysql+aiomysql://u:p@localhost/db", 5, False)


def test_plain_scheme_urls_get_the_async_drivers() -> None:
    assert create_engine("postgresql://u:p@h/db", 1, False).url.drivername == "postgresql+asyncpg"
    assert create_engine("postgres://u:p@h/db", 1, False).url.drivername == "postgresql+asyncpg"
    assert create_engine("sqlite:///x.db", 1, False).url.drivername == "sqlite+aiosqlite"


def test_described_url_never_shows_credentials() -> None:
    url = "postgresql+asyncpg://soma:hunter2@db.internal:5433/soma?ssl=require"
    assert describe_url(url) == "postgresql://db.internal:5433/soma"
    settings = Settings(database=DatabaseSettings(url=SecretStr(url)))
    assert "hunter2" not in DatabaseService.describe(settings)
    assert DatabaseService.describe(Settings(data_dir=Path("/srv/soma"))) == (
        "sqlite:////srv/soma/soma.db"
    )


def test_head_revision_is_the_shipped_migration() -> None:
    head = head_revision()
    shipped = sorted(path.name for path in (MIGRATIONS_DIR / "versions").glob("0*.py"))
    assert shipped[-1].startswith(f"{head}_")


def _hash(prev_hash: str, data: dict[str, int]) -> str:
    return entry_hash(
        prev_hash,
        tenant_id="t",
        actor="key-1",
        action="agent.create",
        resource="agents/a",
        data=data,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    )


def test_audit_hash_covers_content_and_previous_hash() -> None:
    first = _hash(GENESIS_HASH, {"b": 1, "a": 2})
    assert first == _hash(GENESIS_HASH, {"a": 2, "b": 1}), "key order must not matter"
    assert first != _hash(GENESIS_HASH, {"a": 3, "b": 1})
    assert first != _hash("f" * 64, {"b": 1, "a": 2})


async def test_outbox_signal_returns_at_once_when_set_and_is_consumed() -> None:
    signal = OutboxSignal()
    signal.notify()
    await asyncio.wait_for(signal.wait(timeout_s=60), timeout=10)
    waiter = asyncio.create_task(signal.wait(timeout_s=60))
    await asyncio.sleep(0.05)
    assert not waiter.done(), "the earlier notification should have been consumed"
    signal.notify()
    await asyncio.wait_for(waiter, timeout=10)
