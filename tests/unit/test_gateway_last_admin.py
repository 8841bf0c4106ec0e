"""No admin can lock everyone out: the platform tenant keeps at least one active admin key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from soma.storage.tables import audit_log
from tests.support.gateway_app import GatewayHarness, gateway_settings, new_tenant, running_gateway

PROBLEM = "application/problem+json"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[GatewayHarness]:
    settings = gateway_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}")
    async with running_gateway(settings) as harness:
        yield harness


async def _key_id(admin: httpx.AsyncClient, name: str) -> str:
    items = (await admin.get("/v1/admin/keys")).json()["items"]
    return str(next(k["id"] for k in items if k["name"] == name))


async def _revocations(gw: GatewayHarness) -> int:
    async with gw.database.database.read() as uow:
        rows = await uow.connection.execute(
            select(audit_log.c.id).where(audit_log.c.action == "api_key.revoke")
        )
        return len(rows.all())


async def test_the_last_platform_admin_key_cannot_be_revoked(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as admin:
        own = await _key_id(admin, "bootstrap-admin")
        deleted = await admin.delete(f"/v1/admin/keys/{own}")
        revoked = await admin.post(f"/v1/admin/keys/{own}/revoke")
        for answer in (deleted, revoked):
            assert answer.status_code == 409
            assert answer.headers["content-type"] == PROBLEM
            assert "last active admin key" in answer.json()["detail"]
            assert "--reset-admin-key" in answer.json()["detail"]
        assert (await admin.get("/v1/agents")).status_code == 200
        listed = (await admin.get("/v1/admin/keys")).json()["items"]
    assert all(k["revoked_at"] is None for k in listed)
    assert await _revocations(gw) == 0


async def test_with_a_second_admin_key_the_first_goes_then_the_second_stays(
    gw: GatewayHarness,
) -> None:
    async with gw.client(gw.admin_key) as admin:
        own = await _key_id(admin, "bootstrap-admin")
        second = (
            await admin.post("/v1/admin/keys", json={"name": "ops", "scopes": ["admin"]})
        ).json()
        chat = (await admin.post("/v1/admin/keys", json={"name": "c", "scopes": ["chat"]})).json()
        assert (await admin.delete(f"/v1/admin/keys/{own}")).status_code == 204
    async with gw.client(second["key"]) as ops:
        assert (await ops.delete(f"/v1/admin/keys/{own}")).status_code == 204  # idempotent
        assert (await ops.post(f"/v1/admin/keys/{second['id']}/revoke")).status_code == 409
        assert (await ops.delete(f"/v1/admin/keys/{chat['id']}")).status_code == 204
        assert (await ops.get("/v1/admin/keys")).status_code == 200
    assert await _revocations(gw) == 2


async def test_another_tenants_last_admin_key_is_not_protected(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as platform:
        acme = await new_tenant(platform, "acme")
        items = (await platform.get("/v1/admin/keys", params={"tenant_id": acme.tenant_id})).json()
        admin_id = next(k["id"] for k in items["items"] if "admin" in k["scopes"])
        assert (await platform.delete(f"/v1/admin/keys/{admin_id}")).status_code == 204
    async with gw.client(acme.admin_key) as http:
        assert (await http.get("/v1/admin/keys")).status_code == 401
