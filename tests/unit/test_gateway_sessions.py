"""`/v1/sessions` and their messages (SQLite, in-process cache)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from soma.storage.tables import sessions
from tests.support.gateway_app import GatewayHarness, gateway_settings, running_gateway


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[GatewayHarness]:
    settings = gateway_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}")
    async with running_gateway(settings) as harness:
        yield harness


async def _session_rows(gw: GatewayHarness) -> int:
    async with gw.database.database.read() as uow:
        query = select(func.count()).select_from(sessions)
        return int((await uow.connection.execute(query)).scalar_one())


async def _assistant_id(gw: GatewayHarness) -> str:
    async with gw.client(gw.admin_key) as http:
        return str((await http.get("/v1/agents/assistant")).json()["id"])


async def test_a_session_defaults_to_the_assistant(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        created = await http.post("/v1/sessions", json={})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["agent_id"] == await _assistant_id(gw)
    assert body["title"] is None and body["metadata"] == {}


async def test_the_agent_is_named_by_name_or_id(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        agent = (await http.post("/v1/agents", json={"name": "helper"})).json()
        by_name = await http.post(
            "/v1/sessions", json={"agent": "helper", "title": "t", "metadata": {"k": "v"}}
        )
        by_id = await http.post("/v1/sessions", json={"agent": agent["id"]})
    assert by_name.status_code == by_id.status_code == 201
    assert by_name.json()["agent_id"] == by_id.json()["agent_id"] == agent["id"]
    assert by_name.json()["title"] == "t" and by_name.json()["metadata"] == {"k": "v"}


@pytest.mark.parametrize(
    "payload",
    [
        {"agent": "nobody"},
        {"agent": ""},
        {"title": "x" * 501},
        {"metadata": "flat"},
        {"extra": True},
    ],
)
async def test_invalid_sessions_are_422_and_write_nothing(
    gw: GatewayHarness, payload: dict[str, Any]
) -> None:
    async with gw.client(gw.admin_key) as http:
        response = await http.post("/v1/sessions", json=payload)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await _session_rows(gw) == 0


async def test_a_session_created_lazily_recreates_a_missing_assistant(gw: GatewayHarness) -> None:
    tenant_id = gw.gateway.tenancy.default_tenant_id
    old_id = await _assistant_id(gw)
    async with gw.database.database.transaction() as uow:
        await uow.agents.delete(tenant_id, old_id)
    async with gw.client(gw.admin_key) as http:
        created = await http.post("/v1/sessions", json={"agent": "assistant"})
    assert created.status_code == 201
    assert created.json()["agent_id"] == await _assistant_id(gw) != old_id


async def test_get_list_delete(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        ids = [(await http.post("/v1/sessions", json={})).json()["id"] for _ in range(3)]
        fetched = await http.get(f"/v1/sessions/{ids[0]}")
        page = (await http.get("/v1/sessions", params={"limit": 2})).json()
        rest = (await http.get("/v1/sessions", params={"cursor": page["next_cursor"]})).json()
        assert (await http.delete(f"/v1/sessions/{ids[1]}")).status_code == 204
        after = (await http.get("/v1/sessions")).json()["items"]
        gone = [
            await http.get(f"/v1/sessions/{ids[1]}"),
            await http.delete(f"/v1/sessions/{ids[1]}"),
            await http.get(f"/v1/sessions/{ids[1]}/messages"),
        ]
    assert fetched.status_code == 200 and fetched.json()["id"] == ids[0]
    assert [s["id"] for s in page["items"] + rest["items"]] == ids
    assert rest["next_cursor"] is None
    assert [s["id"] for s in after] == [ids[0], ids[2]]
    assert [r.status_code for r in gone] == [404, 404, 404]


async def test_messages_are_paginated_by_seq(gw: GatewayHarness) -> None:
    tenant_id = gw.gateway.tenancy.default_tenant_id
    async with gw.client(gw.admin_key) as http:
        session_id = (await http.post("/v1/sessions", json={})).json()["id"]
        async with gw.database.database.transaction() as uow:
            for n in range(5):
                role = "user" if n % 2 == 0 else "assistant"
                await uow.messages.create(tenant_id, session_id, role=role, content=f"m{n}")
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await http.get(f"/v1/sessions/{session_id}/messages", params=params)).json()
            seen.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        bad_cursor = await http.get(
            f"/v1/sessions/{session_id}/messages", params={"cursor": "not-a-seq"}
        )
    assert [m["content"] for m in seen] == ["m0", "m1", "m2", "m3", "m4"]
    assert [m["seq"] for m in seen] == [1, 2, 3, 4, 5]
    assert seen[1]["role"] == "assistant" and seen[0]["session_id"] == session_id
    assert bad_cursor.status_code == 400
