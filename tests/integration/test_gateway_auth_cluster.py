"""Keys across replicas: the last-admin race on SQLite and PostgreSQL, and the failed-auth
limit shared through Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from soma.cache.memory import MemoryKeyValue
from soma.config.settings import AuthSettings
from soma.gateway.auth.issuer import LastAdminKeyError, issue_key, revoke_key
from soma.gateway.auth.keys import generate_key
from soma.gateway.auth.verifier import KeyVerifier
from soma.gateway.metrics import GatewayMetrics
from soma.observability.metrics import Metrics
from soma.storage import Database, StorageMetrics, create_engine, migrate
from soma.storage.tables import api_keys
from tests.support.gateway_app import gateway_settings, running_gateway

pytestmark = pytest.mark.integration

ROUNDS = 10


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[list[Database]]:
    """Two replicas' databases: separate engines (connection pools) on one database."""
    engines = [create_engine(database_url, 5, False) for _ in range(2)]
    await migrate(engines[0])
    yield [Database(engine, StorageMetrics(Metrics())) for engine in engines]
    for engine in engines:
        await engine.dispose()


async def _active_admin_keys(database: Database, tenant_id: str) -> list[str]:
    async with database.read() as uow:
        rows = await uow.connection.execute(
            select(api_keys.c.id, api_keys.c.scopes).where(
                api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_at.is_(None)
            )
        )
        return [key_id for key_id, scopes in rows if "admin" in scopes]


async def test_concurrent_revocations_of_the_last_two_admin_keys_leave_one(
    replicas: list[Database],
) -> None:
    one, two = replicas
    async with one.transaction() as uow:
        tenant = await uow.tenants.create("default")
        first = await issue_key(uow, tenant.id, name="first", scopes=["admin"], actor="t")
    survivor = first.key.id
    verifiers = [
        KeyVerifier(db, MemoryKeyValue(), AuthSettings(), GatewayMetrics(Metrics()))
        for db in replicas
    ]
    for round_ in range(ROUNDS):
        async with two.transaction() as uow:
            extra = await issue_key(uow, tenant.id, name=f"r{round_}", scopes=["admin"], actor="t")
        pair = [survivor, extra.key.id]
        outcomes = await asyncio.gather(
            *(
                revoke_key(db, check, tenant.id, key_id, actor="t", keep_admin_of=tenant.id)
                for db, check, key_id in zip(replicas, verifiers, pair, strict=True)
            ),
            return_exceptions=True,
        )
        refused = [o for o in outcomes if isinstance(o, LastAdminKeyError)]
        done = [o for o in outcomes if not isinstance(o, BaseException)]
        assert (len(refused), len(done)) == (1, 1), outcomes
        left = await _active_admin_keys(one, tenant.id)
        assert len(left) == 1
        survivor = left[0]


async def test_the_failed_auth_limit_is_shared_by_replicas_through_redis(
    tmp_path: Path, pg_database_url: str, clean_redis_url: str
) -> None:
    settings = gateway_settings(
        tmp_path,
        pg_database_url,
        clean_redis_url,
        auth={"failed_auth_burst": 6, "failed_auth_rate_per_s": 0.01},
    )
    async with running_gateway(settings) as one, running_gateway(settings) as two:
        statuses = []
        for n in range(9):
            replica = (one, two)[n % 2]
            async with replica.client(generate_key().plaintext) as http:
                statuses.append((await http.get("/v1/agents")).status_code)
        # Six failures in total, wherever they landed, then every replica refuses.
        assert statuses == [401] * 6 + [429] * 3
        # A blocked address gets no database lookups, so a key in no cache waits it out too.
        async with one.client(one.admin_key) as http:
            assert (await http.get("/v1/agents")).status_code == 429
