"""First start: default tenant, assistant, admin key file; later starts change nothing."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, select

from soma.cache.memory import MemoryKeyValue
from soma.cache.memory_quotas import MemoryQuotas
from soma.config import Settings
from soma.core.errors import StartupError
from soma.gateway.service import GatewayService
from soma.gateway.tenancy import ASSISTANT, DEFAULT_TENANT
from soma.limits.governor import Limits
from soma.limits.source import StoredOverrides
from soma.observability.metrics import Metrics
from soma.storage import DatabaseService
from soma.storage.tables import agents, api_keys, tenants
from tests.support.gateway_app import gateway_settings, running_gateway


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return gateway_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}", **overrides)


async def _count(database: DatabaseService, table: Table) -> int:
    async with database.database.read() as uow:
        query = select(func.count()).select_from(table)
        return int((await uow.connection.execute(query)).scalar_one())


async def test_first_start_writes_one_line_mode_0600_and_logs_only_the_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path)
    caplog.set_level(logging.DEBUG)
    async with running_gateway(settings) as gw:
        path = settings.bootstrap_key_file
        assert path == tmp_path / "data" / "admin.key"
        text = path.read_text()
        assert text.count("\n") == 1 and text.endswith("\n")
        key = text.strip()
        assert key.startswith("soma_")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        async with gw.client(key) as http:
            keys = (await http.get("/v1/admin/keys")).json()["items"]
            agent_names = [a["name"] for a in (await http.get("/v1/agents")).json()["items"]]
        assert [k["scopes"] for k in keys] == [["admin", "chat"]]
        assert agent_names == [ASSISTANT]
    logged = "\n".join(
        [record.getMessage() for record in caplog.records]
        + [repr(record.__dict__) for record in caplog.records]
    )
    assert key not in logged
    assert key.split("_", 2)[2] not in logged  # not even the secret part
    assert str(path) in logged


async def test_second_start_does_not_rotate_the_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    async with running_gateway(settings) as gw:
        first = settings.bootstrap_key_file.read_text()
        first_mtime = settings.bootstrap_key_file.stat().st_mtime_ns
    async with running_gateway(settings) as gw:
        assert settings.bootstrap_key_file.read_text() == first
        assert settings.bootstrap_key_file.stat().st_mtime_ns == first_mtime
        assert await _count(gw.database, tenants) == 1
        assert await _count(gw.database, api_keys) == 1
        assert await _count(gw.database, agents) == 1
        async with gw.client(first.strip()) as http:
            assert (await http.get("/v1/agents")).status_code == 200


async def test_deleting_the_key_file_after_use_does_not_rotate_the_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    async with running_gateway(settings):
        key = settings.bootstrap_key_file.read_text().strip()
    settings.bootstrap_key_file.unlink()  # what an operator should do once the key is stored
    async with running_gateway(settings) as gw:
        assert not settings.bootstrap_key_file.exists()
        assert await _count(gw.database, api_keys) == 1
        async with gw.client(key) as http:
            assert (await http.get("/v1/agents")).status_code == 200


async def test_a_configured_key_file_path_is_used(tmp_path: Path) -> None:
    target = tmp_path / "secrets" / "deep" / "soma-admin.key"
    settings = _settings(tmp_path, auth={"bootstrap_key_file": target})
    async with running_gateway(settings):
        assert target.read_text().startswith("soma_")
    assert not (tmp_path / "data" / "admin.key").exists()


async def test_a_stale_key_file_with_an_empty_database_fails_start_and_writes_nothing(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    settings.bootstrap_key_file.parent.mkdir(parents=True)
    settings.bootstrap_key_file.write_text("soma_from_another_database\n")
    with pytest.raises(StartupError, match="already exists") as raised:
        async with running_gateway(settings):
            pass
    assert "\n" not in str(raised.value)
    assert settings.bootstrap_key_file.read_text() == "soma_from_another_database\n"
    metrics = Metrics()
    database = DatabaseService(settings, metrics)
    await database.start()
    try:
        assert await _count(database, tenants) == 0
        assert await _count(database, api_keys) == 0
    finally:
        await database.stop()


async def test_two_replicas_starting_at_once_create_one_tenant_and_one_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="soma.gateway")
    settings = _settings(tmp_path)
    metrics = Metrics()
    first, second = DatabaseService(settings, metrics), DatabaseService(settings, Metrics())
    await first.start()
    await second.start()
    try:
        replicas = [
            GatewayService(
                settings,
                Metrics(),
                db.database,
                MemoryKeyValue(),
                MemoryQuotas(),
                limits=Limits(settings.limits, MemoryQuotas(), StoredOverrides(db.database)),
            )
            for db in (first, second)
        ]
        await asyncio.gather(*(replica.start() for replica in replicas))
        ids = {replica.tenancy.default_tenant_id for replica in replicas}
        assert len(ids) == 1
        assert await _count(first, tenants) == 1
        assert await _count(first, api_keys) == 1
        assert await _count(first, agents) == 1
        async with first.database.read() as uow:
            tenant = await uow.tenants.get_by_name(DEFAULT_TENANT)
            assert tenant is not None and tenant.id in ids
            key_rows = (await uow.connection.execute(select(api_keys))).all()
        assert settings.bootstrap_key_file.read_text().strip()[5:17] == key_rows[0].prefix
        assert sorted(p.name for p in settings.bootstrap_key_file.parent.iterdir()) == ["admin.key"]
        messages = [record.getMessage() for record in caplog.records]
        assert "default tenant created by another replica" in messages  # the race was real
    finally:
        await first.stop()
        await second.stop()


async def test_a_missing_assistant_is_recreated_at_start(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    async with running_gateway(settings) as gw:
        tenant_id = gw.gateway.tenancy.default_tenant_id
        async with gw.database.database.transaction() as uow:
            assistant = await uow.agents.get_by_name(tenant_id, ASSISTANT)
            assert assistant is not None
            await uow.agents.delete(tenant_id, assistant.id)
    async with running_gateway(settings) as gw:
        async with gw.database.database.read() as uow:
            again = await uow.agents.get_by_name(tenant_id, ASSISTANT)
        assert again is not None and again.model == settings.llm.default_model
