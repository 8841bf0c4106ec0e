"""`/v1/memories` over HTTP on both backends: keep, list, search, delete, forget a user,
export; tenants and users isolated; bad input refused with nothing changed; policy checked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import APIRouter

from soma.cache.service import CacheService
from soma.config import Settings
from soma.gateway.routers.memories import memories_router
from soma.gateway.tenancy import Tenancy
from soma.memory.service import UnifiedMemoryService
from soma.observability.metrics import Metrics
from soma.policy.service import PolicyService, create_policy
from soma.storage import DatabaseService
from tests.support.gateway_app import (
    GatewayHarness,
    TenantKeys,
    gateway_settings,
    new_tenant,
    running_gateway,
)

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"
READ_ONLY_POLICY = """package soma.policy

import rego.v1

default decision := {"allow": true, "require_approval": false, "reason": "allowed"}

decision := {"allow": false, "require_approval": false, "reason": "memory is read-only"} if {
	input.action == "memory.write"
}
"""


@asynccontextmanager
async def memory_gateway(settings: Settings) -> AsyncIterator[GatewayHarness]:
    """The gateway with the memory routes, the memory service and the policy engine."""
    started: list[UnifiedMemoryService | PolicyService] = []

    def routers(database: DatabaseService, cache: CacheService) -> Sequence[APIRouter]:
        memory = UnifiedMemoryService(settings.memory, database.database, Metrics())
        policy = create_policy(settings, Metrics())
        started.extend([policy, memory])
        tenancy = Tenancy(database.database, settings.llm.default_model)
        return [memories_router(memory, database.database, tenancy, policy, settings.memory)]

    async with running_gateway(settings, routers) as gw:
        for service in started:
            await service.start()
        try:
            yield gw
        finally:
            for service in reversed(started):
                await service.stop()


@pytest.fixture
async def gw(tmp_path: Path, database_url: str) -> AsyncIterator[GatewayHarness]:
    async with memory_gateway(gateway_settings(tmp_path, database_url)) as harness:
        yield harness


@pytest.fixture
async def tenants(gw: GatewayHarness) -> tuple[TenantKeys, TenantKeys]:
    async with gw.client(gw.admin_key) as platform:
        return await new_tenant(platform, "acme"), await new_tenant(platform, "globex")


async def _keep(http: httpx.AsyncClient, content: str, **fields: Any) -> dict[str, Any]:
    response = await http.post("/v1/memories", json={"content": content, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _export(http: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await http.get("/v1/memories/export", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [orjson.loads(line) for line in response.content.splitlines()]


async def test_keep_list_search_get_and_delete(
    gw: GatewayHarness, tenants: tuple[TenantKeys, TenantKeys]
) -> None:
    acme, _ = tenants
    async with gw.client(acme.chat_key) as http:
        dog = await _keep(http, "My dog is called Rex.", tags=["pets"])
        assert dog["outcome"] == "stored" and dog["kind"] == "fact" and dog["source"] == "api"
        await _keep(http, "I work as a nurse.")
        await _keep(http, "I am allergic to peanuts.", user="u1")
        again = await http.post("/v1/memories", json={"content": "My dog is called Rex"})
        assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
        assert again.json()["id"] == dog["id"]

        first = await http.get("/v1/memories", params={"limit": 2})
        assert first.status_code == 200, first.text
        page = first.json()
        assert [m["content"] for m in page["items"]] == [
            "I am allergic to peanuts.",
            "I work as a nurse.",
        ]
        rest = await http.get("/v1/memories", params={"limit": 2, "cursor": page["next_cursor"]})
        assert [m["content"] for m in rest.json()["items"]] == ["My dog is called Rex."]
        assert rest.json()["next_cursor"] is None
        mine = await http.get("/v1/memories", params={"user": "u1"})
        assert [m["content"] for m in mine.json()["items"]] == ["I am allergic to peanuts."]

        found = await http.get("/v1/memories", params={"query": "what pet do I have", "limit": 1})
        assert [m["content"] for m in found.json()["items"]] == ["My dog is called Rex."]
        assert 0 < found.json()["items"][0]["score"] <= 1
        users = await http.get("/v1/memories", params={"query": "food allergy", "user": "u1"})
        assert users.json()["items"][0]["content"] == "I am allergic to peanuts."

        got = await http.get(f"/v1/memories/{dog['id']}")
        assert got.status_code == 200 and got.json()["tags"] == ["pets"]
        assert (await http.delete(f"/v1/memories/{dog['id']}")).status_code == 204
        gone = await http.get(f"/v1/memories/{dog['id']}")
        assert gone.status_code == 404 and gone.headers["content-type"] == PROBLEM
        assert (await http.delete(f"/v1/memories/{dog['id']}")).status_code == 404
        found = await http.get("/v1/memories", params={"query": "what pet do I have"})
        assert "My dog is called Rex." not in [m["content"] for m in found.json()["items"]]


async def test_another_tenants_memories_answer_404_and_stay(
    gw: GatewayHarness, tenants: tuple[TenantKeys, TenantKeys]
) -> None:
    acme, globex = tenants
    async with gw.client(acme.chat_key) as a, gw.client(globex.admin_key) as b:
        secret = await _keep(a, "The launch code is 1234.", user="x")
        assert (await b.get(f"/v1/memories/{secret['id']}")).status_code == 404
        assert (await b.delete(f"/v1/memories/{secret['id']}")).status_code == 404
        assert (await b.get("/v1/memories")).json()["items"] == []
        query = {"query": "launch code", "user": "x"}
        assert (await b.get("/v1/memories", params=query)).json()["items"] == []
        assert await _export(b) == []
        forgotten = await b.delete("/v1/memories", params={"user": "x"})
        assert forgotten.status_code == 200 and forgotten.json() == {"deleted": 0}
        # Naming A's agent by id from B is naming an unknown agent.
        agent_id = secret["agent_id"]
        assert (await b.get("/v1/memories", params={"agent": agent_id})).status_code == 404
        assert [m["id"] for m in await _export(a)] == [secret["id"]]
        # Within A, user y does not recall x's memory.
        other = await a.get("/v1/memories", params={"query": "launch code", "user": "y"})
        assert other.json()["items"] == []


async def test_forget_a_user_and_export_history(
    gw: GatewayHarness, tenants: tuple[TenantKeys, TenantKeys]
) -> None:
    acme, _ = tenants
    async with gw.client(acme.chat_key) as http:
        old = await _keep(http, "My favourite colour is blue.", kind="preference", user="x")
        new = await _keep(http, "My favourite colour is green.", kind="preference", user="x")
        assert new["superseded"] == [old["id"]]
        await _keep(http, "I like jazz.", kind="preference", user="y")
        history = await _export(http, user="x")
        assert [(m["content"], m["superseded_by"]) for m in history] == [
            ("My favourite colour is blue.", new["id"]),
            ("My favourite colour is green.", None),
        ]
        listed = await http.get("/v1/memories", params={"user": "x"})
        assert [m["id"] for m in listed.json()["items"]] == [new["id"]]
        forgotten = await http.delete("/v1/memories", params={"user": "x"})
        assert forgotten.json() == {"deleted": 2}
        assert [m["content"] for m in await _export(http)] == ["I like jazz."]


async def test_bad_input_is_refused_and_changes_nothing(
    gw: GatewayHarness, tenants: tuple[TenantKeys, TenantKeys]
) -> None:
    acme, _ = tenants
    async with gw.client(acme.chat_key) as http:
        for body in (
            {"content": ""},
            {"content": "   "},
            {"content": "x", "kind": "opinion"},
            {"content": "x", "colour": "red"},
            {"content": "x", "tags": [""]},
            {"content": "x", "user": "bad\nuser"},
            {"content": "x" * 4_001},
        ):
            response = await http.post("/v1/memories", json=body)
            assert response.status_code == 422, (body, response.text)
            assert response.headers["content-type"] == PROBLEM
        unknown = await http.post("/v1/memories", json={"content": "x", "agent": "nobody"})
        assert unknown.status_code == 404
        assert (await http.delete("/v1/memories")).status_code == 422
        paged = await http.get("/v1/memories", params={"query": "x", "cursor": "abc"})
        assert paged.status_code == 400
        assert await _export(http) == []


async def test_sessions_name_their_end_user(
    gw: GatewayHarness, tenants: tuple[TenantKeys, TenantKeys]
) -> None:
    acme, _ = tenants
    async with gw.client(acme.chat_key) as http:
        created = await http.post("/v1/sessions", json={"user": "customer-42"})
        assert created.status_code == 201 and created.json()["user"] == "customer-42"
        got = await http.get(f"/v1/sessions/{created.json()['id']}")
        assert got.json()["user"] == "customer-42"
        plain = await http.post("/v1/sessions", json={})
        assert plain.json()["user"] is None


async def test_the_policy_decides_memory_writes(tmp_path: Path, sqlite_database_url: str) -> None:
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / "soma.rego").write_text(READ_ONLY_POLICY)
    settings = gateway_settings(tmp_path, sqlite_database_url, policy={"rego_dir": rego})
    async with memory_gateway(settings) as gw, gw.client(gw.admin_key) as http:
        denied = await http.post("/v1/memories", json={"content": "I like tea."})
        assert denied.status_code == 403 and "memory is read-only" in denied.json()["detail"]
        assert (await http.delete("/v1/memories", params={"user": "x"})).status_code == 403
        assert (await http.get("/v1/memories")).status_code == 200
        assert await _export(http) == []
