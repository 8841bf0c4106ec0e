"""Key lifecycle and tenant isolation, on SQLite + in-process cache and PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Table, func, select

from soma.cache.service import create_cache
from soma.config import Settings
from soma.core import Service
from soma.gateway.auth.verifier import cache_key
from soma.gateway.service import GatewayService
from soma.limits.governor import Limits
from soma.limits.source import StoredOverrides
from soma.observability.metrics import Metrics
from soma.storage import DatabaseService
from soma.storage.tables import agents, api_keys, messages, sessions, tenants
from tests.support.gateway_app import (
    GatewayHarness,
    gateway_settings,
    new_tenant,
    running_gateway,
)

pytestmark = pytest.mark.integration

LONG_CACHE_S = 300.0
"""Far longer than any test: a revoked key must be refused because the cache was cleared."""


@pytest.fixture(params=["sqlite+memory", "postgres+redis"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite+memory":
        database_url, cache_url = f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}", "memory://"
    else:
        database_url = str(request.getfixturevalue("pg_database_url"))
        cache_url = str(request.getfixturevalue("clean_redis_url"))
    return gateway_settings(
        tmp_path, database_url, cache_url, auth={"key_cache_ttl_s": LONG_CACHE_S}
    )


@pytest.fixture
def shared_settings(tmp_path: Path, pg_database_url: str, clean_redis_url: str) -> Settings:
    """What replicas of a cluster share: one PostgreSQL database and one Redis."""
    # No in-process key cache: these tests prove what the shared cache does on its own (the
    # local one's revocation delay is tested in test_gateway_auth_cluster.py).
    return gateway_settings(
        tmp_path,
        pg_database_url,
        clean_redis_url,
        auth={"key_cache_ttl_s": LONG_CACHE_S, "local_cache_ttl_s": 0},
    )


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[GatewayHarness]:
    async with running_gateway(settings) as harness:
        yield harness


async def _count(gw: GatewayHarness, table: Table) -> int:
    async with gw.database.database.read() as uow:
        query = select(func.count()).select_from(table)
        return int((await uow.connection.execute(query)).scalar_one())


async def test_key_lifecycle(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as admin:
        created = await admin.post("/v1/admin/keys", json={"name": "app", "scopes": ["chat"]})
        assert created.status_code == 201, created.text
        issued = created.json()
        plaintext, secret = issued["key"], issued["key"].split("_", 2)[2]

        async with gw.client(plaintext) as app:
            assert (await app.get("/v1/agents")).status_code == 200
            # The verification is now cached: prove it, so the revocation below meets it warm.
            assert await gw.cache.kv.get(cache_key(issued["prefix"])) is not None
            assert (await app.get("/v1/sessions")).status_code == 200

            listed = await admin.get("/v1/admin/keys")
            assert issued["id"] in {k["id"] for k in listed.json()["items"]}
            assert secret not in listed.text and "hash" not in listed.text

            revoked = await admin.delete(f"/v1/admin/keys/{issued['id']}")
            assert revoked.status_code == 204
            refused = await app.get("/v1/agents")
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert refused.json()["detail"] == "the API key has been revoked"

        async with gw.database.database.read() as uow:
            rows = (await uow.connection.execute(select(api_keys))).mappings().all()
    assert len(rows) == 2
    for row in rows:
        stored = repr(dict(row))
        assert plaintext not in stored and secret not in stored
        assert gw.admin_key not in stored and gw.admin_key.split("_", 2)[2] not in stored
    row = next(r for r in rows if r["id"] == issued["id"])
    assert row["prefix"] == issued["prefix"] and len(row["secret_hash"]) == 64
    assert row["revoked_at"] is not None


async def _missing_body(http: httpx.AsyncClient, method: str, path: str, real_id: str) -> Any:
    """The problem body for a resource id that exists nowhere, phrased for `real_id`."""
    missing_id = "0" * len(real_id)
    response = await http.request(method, path.replace(real_id, missing_id), json={})
    assert response.status_code == 404
    body = response.json()
    body["detail"] = body["detail"].replace(missing_id, real_id)
    return body


async def test_another_tenants_agents_and_sessions_are_404(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as platform:
        acme = await new_tenant(platform, "acme")
        globex = await new_tenant(platform, "globex")
    async with gw.client(acme.chat_key) as owner:
        agent = (await owner.post("/v1/agents", json={"name": "secret-agent"})).json()
        session = (await owner.post("/v1/sessions", json={"agent": agent["id"]})).json()
    async with gw.database.database.transaction() as uow:
        await uow.messages.create(acme.tenant_id, session["id"], role="user", content="private")
    before = {t.name: await _count(gw, t) for t in (agents, sessions, messages, api_keys)}

    routes = [
        ("GET", f"/v1/agents/{agent['id']}", agent["id"]),
        ("PATCH", f"/v1/agents/{agent['id']}", agent["id"]),
        ("DELETE", f"/v1/agents/{agent['id']}", agent["id"]),
        ("GET", f"/v1/sessions/{session['id']}", session["id"]),
        ("DELETE", f"/v1/sessions/{session['id']}", session["id"]),
        ("GET", f"/v1/sessions/{session['id']}/messages", session["id"]),
    ]
    for key in (globex.chat_key, globex.admin_key):
        async with gw.client(key) as intruder:
            for method, path, real_id in routes:
                body = {"instructions": "pwned"} if method == "PATCH" else None
                response = await intruder.request(method, path, json=body)
                assert response.status_code == 404, (method, path, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json() == await _missing_body(intruder, method, path, real_id)
            by_name = await intruder.get("/v1/agents/secret-agent")
            assert by_name.status_code == 404
            foreign_agent = await intruder.post("/v1/sessions", json={"agent": agent["id"]})
            assert foreign_agent.status_code == 422
            agents_seen = (await intruder.get("/v1/agents")).json()["items"]
            sessions_seen = (await intruder.get("/v1/sessions")).json()["items"]
            assert [a["name"] for a in agents_seen] == ["assistant"]
            assert agent["id"] not in {a["id"] for a in agents_seen}
            assert sessions_seen == []

    after = {t.name: await _count(gw, t) for t in (agents, sessions, messages, api_keys)}
    assert after == before
    async with gw.client(acme.chat_key) as owner:
        still = (await owner.get(f"/v1/agents/{agent['id']}")).json()
        history = (await owner.get(f"/v1/sessions/{session['id']}/messages")).json()
    assert still == agent
    assert [m["content"] for m in history["items"]] == ["private"]


async def test_revocation_reaches_every_replica_at_once(shared_settings: Settings) -> None:
    async with running_gateway(shared_settings) as one, running_gateway(shared_settings) as two:
        assert one.gateway.tenancy.default_tenant_id == two.gateway.tenancy.default_tenant_id
        async with one.client(one.admin_key) as admin:
            issued = (
                await admin.post("/v1/admin/keys", json={"name": "app", "scopes": ["chat"]})
            ).json()
            async with two.client(issued["key"]) as on_two:
                assert (await on_two.get("/v1/agents")).status_code == 200
                assert await two.cache.kv.get(cache_key(issued["prefix"])) is not None
                assert (await admin.delete(f"/v1/admin/keys/{issued['id']}")).status_code == 204
                assert (await on_two.get("/v1/agents")).status_code == 401


async def test_replicas_bootstrapping_at_once_make_one_tenant_and_one_key(
    shared_settings: Settings,
) -> None:
    metrics = [Metrics() for _ in range(3)]
    databases = [DatabaseService(shared_settings, m) for m in metrics]
    caches = [create_cache(shared_settings, m) for m in metrics]
    services: list[Service] = [*databases, *caches]
    for service in services:
        await service.start()
    try:
        replicas = [
            GatewayService(
                shared_settings,
                m,
                db.database,
                cache.kv,
                cache.quotas,
                limits=Limits(shared_settings.limits, cache.quotas, StoredOverrides(db.database)),
            )
            for m, db, cache in zip(metrics, databases, caches, strict=True)
        ]
        await asyncio.gather(*(replica.start() for replica in replicas))
        assert len({r.tenancy.default_tenant_id for r in replicas}) == 1
        async with databases[0].database.read() as uow:
            counts = [
                int(
                    (await uow.connection.execute(select(func.count()).select_from(t))).scalar_one()
                )
                for t in (tenants, api_keys, agents)
            ]
            key = await uow.api_keys.lookup_by_prefix(
                shared_settings.bootstrap_key_file.read_text().strip()[5:17]
            )
        assert counts == [1, 1, 1]
        assert key is not None and not key.revoked
    finally:
        for service in reversed(services):
            await service.stop()
