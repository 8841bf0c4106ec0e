"""Admin routes: tenants and API keys, and who may manage which (SQLite, in-process cache)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Table, func, select

from soma.storage.tables import agents, api_keys, audit_log, tenants
from tests.support.gateway_app import GatewayHarness, gateway_settings, new_tenant, running_gateway


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[GatewayHarness]:
    settings = gateway_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}")
    async with running_gateway(settings) as harness:
        yield harness


async def _count(gw: GatewayHarness, table: Table) -> int:
    async with gw.database.database.read() as uow:
        query = select(func.count()).select_from(table)
        return int((await uow.connection.execute(query)).scalar_one())


async def test_creating_a_tenant_creates_its_assistant(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as platform:
        acme = await new_tenant(platform, "acme")
        listed = (await platform.get("/v1/admin/tenants")).json()
    assert sorted(t["name"] for t in listed["items"]) == ["acme", "default"]
    assert listed["next_cursor"] is None
    async with gw.client(acme.chat_key) as http:
        items = (await http.get("/v1/agents")).json()["items"]
    assert [(a["name"], a["model"]) for a in items] == [("assistant", "local")]


async def test_duplicate_tenant_name_is_409(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as platform:
        assert (await platform.post("/v1/admin/tenants", json={"name": "acme"})).status_code == 201
        again = await platform.post("/v1/admin/tenants", json={"name": "acme"})
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert await _count(gw, tenants) == 2


async def test_tenant_routes_are_for_platform_admins_only(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as platform:
        acme = await new_tenant(platform, "acme")
    async with gw.client(acme.admin_key) as tenant_admin:
        assert (await tenant_admin.get("/v1/admin/tenants")).status_code == 403
        created = await tenant_admin.post("/v1/admin/tenants", json={"name": "evil"})
        assert created.status_code == 403
    assert await _count(gw, tenants) == 2


async def test_key_secret_is_shown_once_and_never_listed(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as admin:
        created = await admin.post("/v1/admin/keys", json={"name": "app", "scopes": ["chat"]})
        assert created.status_code == 201
        body = created.json()
        listed = await admin.get("/v1/admin/keys")
        single = await admin.post(f"/v1/admin/keys/{body['id']}/revoke")
    assert body["key"].startswith(f"soma_{body['prefix']}_")
    assert set(body) == {
        "id",
        "tenant_id",
        "name",
        "prefix",
        "scopes",
        "created_at",
        "revoked_at",
        "key",
    }
    secret = body["key"].split("_", 2)[2]
    for response in (listed, single):
        text = response.text
        assert secret not in text and body["key"] not in text
        assert "hash" not in text
    rows = [k for k in listed.json()["items"] if k["id"] == body["id"]]
    assert rows and "key" not in rows[0]


async def test_key_create_validation_errors_write_nothing(gw: GatewayHarness) -> None:
    before = (await _count(gw, api_keys), await _count(gw, audit_log))
    bad_bodies = [
        {"name": "x", "scopes": ["root"]},
        {"name": "x", "scopes": []},
        {"name": "", "scopes": ["chat"]},
        {"scopes": ["chat"]},
        {"name": "x", "scopes": ["chat"], "secret": "mine"},
        {"name": "x", "scopes": "chat"},
        {"name": 7, "scopes": ["chat"]},
    ]
    async with gw.client(gw.admin_key) as admin:
        for body in bad_bodies:
            response = await admin.post("/v1/admin/keys", json=body)
            assert response.status_code == 422, body
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["errors"]
        bad_tenant = await admin.post("/v1/admin/tenants", json={"name": "has space"})
        assert bad_tenant.status_code == 422
    assert (await _count(gw, api_keys), await _count(gw, audit_log)) == before
    assert await _count(gw, tenants) == 1


async def test_tenant_admin_manages_only_its_own_keys(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as platform:
        acme = await new_tenant(platform, "acme")
        globex = await new_tenant(platform, "globex")
        globex_keys = (
            await platform.get("/v1/admin/keys", params={"tenant_id": globex.tenant_id})
        ).json()["items"]
    assert len(globex_keys) == 2
    globex_key_id = globex_keys[0]["id"]
    async with gw.client(acme.admin_key) as acme_admin:
        own = (await acme_admin.get("/v1/admin/keys")).json()["items"]
        assert {k["tenant_id"] for k in own} == {acme.tenant_id}
        other = {"tenant_id": globex.tenant_id}
        listing = await acme_admin.get("/v1/admin/keys", params=other)
        issuing = await acme_admin.post(
            "/v1/admin/keys", json={"name": "x", "scopes": ["chat"], **other}
        )
        deleting = await acme_admin.delete(f"/v1/admin/keys/{globex_key_id}")
        deleting_named = await acme_admin.delete(f"/v1/admin/keys/{globex_key_id}", params=other)
        revoking = await acme_admin.post(f"/v1/admin/keys/{globex_key_id}/revoke")
    for response in (listing, issuing, deleting, deleting_named, revoking):
        assert response.status_code == 404, response.text
    async with gw.client(globex.chat_key) as globex_app:
        assert (await globex_app.get("/v1/agents")).status_code == 200


async def test_platform_admin_manages_every_tenants_keys(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as platform:
        acme = await new_tenant(platform, "acme")
        acme_keys = (
            await platform.get("/v1/admin/keys", params={"tenant_id": acme.tenant_id})
        ).json()["items"]
        chat_key_id = next(k["id"] for k in acme_keys if k["scopes"] == ["chat"])
        revoked = await platform.delete(f"/v1/admin/keys/{chat_key_id}")
        assert revoked.status_code == 204
        missing_tenant = await platform.post(
            "/v1/admin/keys", json={"name": "x", "scopes": ["chat"], "tenant_id": "nope"}
        )
        assert missing_tenant.status_code == 404
        assert (await platform.delete("/v1/admin/keys/nope")).status_code == 404
    async with gw.client(acme.chat_key) as http:
        assert (await http.get("/v1/agents")).status_code == 401


async def test_revoke_is_idempotent_and_both_routes_work(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as admin:
        a = (await admin.post("/v1/admin/keys", json={"name": "a", "scopes": ["chat"]})).json()
        b = (await admin.post("/v1/admin/keys", json={"name": "b", "scopes": ["chat"]})).json()
        first = await admin.post(f"/v1/admin/keys/{a['id']}/revoke")
        again = await admin.post(f"/v1/admin/keys/{a['id']}/revoke")
        deleted = await admin.delete(f"/v1/admin/keys/{b['id']}")
        deleted_again = await admin.delete(f"/v1/admin/keys/{b['id']}")
        listed = {k["id"]: k for k in (await admin.get("/v1/admin/keys")).json()["items"]}
    assert first.status_code == 200 and first.json()["revoked_at"] is not None
    assert again.status_code == 200
    assert again.json()["revoked_at"] == first.json()["revoked_at"]
    assert (deleted.status_code, deleted_again.status_code) == (204, 204)
    assert listed[a["id"]]["revoked_at"] is not None and listed[b["id"]]["revoked_at"]
    for key in (a["key"], b["key"]):
        async with gw.client(key) as http:
            assert (await http.get("/v1/agents")).status_code == 401


async def test_admin_actions_are_audited_without_secrets(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as admin:
        created = (
            await admin.post("/v1/admin/keys", json={"name": "a", "scopes": ["chat"]})
        ).json()
        await admin.delete(f"/v1/admin/keys/{created['id']}")
        await admin.post("/v1/admin/tenants", json={"name": "acme"})
    async with gw.database.database.read() as uow:
        rows = (await uow.connection.execute(select(audit_log).order_by(audit_log.c.id))).all()
    actions = [row.action for row in rows]
    assert actions.count("api_key.create") == 2  # bootstrap + this one
    assert "api_key.revoke" in actions and actions.count("tenant.create") == 2
    assert all(created["key"] not in repr(tuple(row)) for row in rows)


async def test_list_pagination_walks_every_item_once(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as admin:
        for n in range(5):
            await admin.post("/v1/admin/keys", json={"name": f"k{n}", "scopes": ["chat"]})
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, str | int] = {"limit": 2}
            if cursor is not None:
                params["cursor"] = cursor
            page = (await admin.get("/v1/admin/keys", params=params)).json()
            seen.extend(item["id"] for item in page["items"])
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        for bad in (0, 201, -1):
            assert (await admin.get("/v1/admin/keys", params={"limit": bad})).status_code == 422
    assert pages == 3 and len(seen) == 6 == len(set(seen))
    assert await _count(gw, agents) == 1
