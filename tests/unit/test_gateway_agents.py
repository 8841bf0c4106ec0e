"""`/v1/agents` (SQLite, in-process cache)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from soma.storage.tables import agents
from tests.support.gateway_app import GatewayHarness, gateway_settings, running_gateway

GPT = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "gpt-x"}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[GatewayHarness]:
    settings = gateway_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}",
        llm={"models": {"GPT": GPT}},
    )
    async with running_gateway(settings) as harness:
        yield harness


async def _agent_rows(gw: GatewayHarness) -> int:
    async with gw.database.database.read() as uow:
        query = select(func.count()).select_from(agents)
        return int((await uow.connection.execute(query)).scalar_one())


async def test_create_applies_the_documented_defaults(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        created = await http.post("/v1/agents", json={"name": "helper"})
        assert created.status_code == 201, created.text
        body = created.json()
        fetched = (await http.get(f"/v1/agents/{body['id']}")).json()
    expected = {
        "name": "helper",
        "instructions": "",
        "model": "local",
        "max_steps": 8,
        "run_timeout_s": 120.0,
        "concurrency": "enqueue",
        "metadata": {},
        "tools": [],
        "memory": False,
    }
    assert {k: body[k] for k in expected} == expected
    assert fetched == body


async def test_create_with_every_field(gw: GatewayHarness) -> None:
    payload: dict[str, Any] = {
        "name": "researcher",
        "instructions": "Cite sources.",
        "model": "gpt",
        "max_steps": 50,
        "run_timeout_s": 30,
        "concurrency": "reject",
        "metadata": {"team": "r&d", "level": 3},
        "tools": ["http_fetch", "python"],
        "memory": True,
    }
    async with gw.client(gw.admin_key) as http:
        created = await http.post("/v1/agents", json=payload)
    assert created.status_code == 201, created.text
    body = created.json()
    assert {k: body[k] for k in payload} == {**payload, "run_timeout_s": 30.0}


async def test_model_names_are_case_insensitive_and_stored_lower_case(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        created = await http.post("/v1/agents", json={"name": "a", "model": "GPT"})
    assert created.json()["model"] == "gpt"


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "a", "model": "unknown-model"},
        {"name": "a", "max_steps": 0},
        {"name": "a", "max_steps": 51},
        {"name": "a", "run_timeout_s": 0},
        {"name": "a", "concurrency": "parallel"},
        {"name": "a", "metadata": ["not", "an", "object"]},
        {"name": "a", "tools": ["python", "python"]},
        {"name": "a", "tools": "python"},
        {"name": "a", "memory": "sometimes"},
        # Values of another JSON type are not coerced: the schema says boolean, integer.
        {"name": "a", "memory": 0},
        {"name": "a", "max_steps": "5"},
        {"name": "a", "run_timeout_s": "30"},
        {"name": ""},
        {"name": "has space"},
        {"instructions": "no name"},
        {"name": "a", "surprise": 1},
    ],
)
async def test_invalid_agents_are_422_and_write_nothing(
    gw: GatewayHarness, payload: dict[str, Any]
) -> None:
    before = await _agent_rows(gw)
    async with gw.client(gw.admin_key) as http:
        response = await http.post("/v1/agents", json=payload)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await _agent_rows(gw) == before


async def test_duplicate_name_is_409(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        assert (await http.post("/v1/agents", json={"name": "dup"})).status_code == 201
        again = await http.post("/v1/agents", json={"name": "dup"})
        assistant = await http.post("/v1/agents", json={"name": "assistant"})
    assert again.status_code == 409 and assistant.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


async def test_patch_changes_only_the_given_fields(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        created = (
            await http.post(
                "/v1/agents",
                json={"name": "p", "instructions": "one", "metadata": {"a": 1}, "tools": ["x"]},
            )
        ).json()
        patched = await http.patch(
            f"/v1/agents/{created['id']}", json={"max_steps": 3, "concurrency": "reject"}
        )
        assert patched.status_code == 200, patched.text
        body = patched.json()
        renamed = await http.patch(f"/v1/agents/{created['id']}", json={"name": "q"})
        by_name = await http.get("/v1/agents/q")
    assert body["max_steps"] == 3 and body["concurrency"] == "reject"
    assert body["instructions"] == "one" and body["metadata"] == {"a": 1}
    assert body["tools"] == ["x"] and body["run_timeout_s"] == 120.0
    assert body["updated_at"] >= created["updated_at"]
    assert renamed.json()["name"] == "q" and by_name.json()["id"] == created["id"]


@pytest.mark.parametrize(
    "patch",
    [
        {"model": "nope"},
        {"max_steps": 100},
        {"memory": 0},
        {"memory": "true"},
        {"name": None},
        {"instructions": None},
        {"metadata": None},
        {"unknown": 1},
    ],
)
async def test_invalid_patches_are_422_and_change_nothing(
    gw: GatewayHarness, patch: dict[str, Any]
) -> None:
    async with gw.client(gw.admin_key) as http:
        created = (await http.post("/v1/agents", json={"name": "p", "max_steps": 4})).json()
        response = await http.patch(f"/v1/agents/{created['id']}", json=patch)
        after = (await http.get(f"/v1/agents/{created['id']}")).json()
    assert response.status_code == 422, response.text
    assert after == created


async def test_renaming_onto_another_agent_is_409(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        await http.post("/v1/agents", json={"name": "one"})
        two = (await http.post("/v1/agents", json={"name": "two"})).json()
        response = await http.patch(f"/v1/agents/{two['id']}", json={"name": "one"})
        after = (await http.get(f"/v1/agents/{two['id']}")).json()
    assert response.status_code == 409
    assert after["name"] == "two"


async def test_the_assistant_cannot_be_deleted_or_renamed(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        items = (await http.get("/v1/agents")).json()["items"]
        assistant = next(a for a in items if a["name"] == "assistant")
        deleted = await http.delete(f"/v1/agents/{assistant['id']}")
        deleted_by_name = await http.delete("/v1/agents/assistant")
        renamed = await http.patch(f"/v1/agents/{assistant['id']}", json={"name": "bob"})
        tuned = await http.patch("/v1/agents/assistant", json={"instructions": "Be brief."})
    assert (deleted.status_code, deleted_by_name.status_code, renamed.status_code) == (
        409,
        409,
        409,
    )
    assert tuned.status_code == 200 and tuned.json()["instructions"] == "Be brief."


async def test_delete_then_404(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        created = (await http.post("/v1/agents", json={"name": "gone"})).json()
        assert (await http.delete(f"/v1/agents/{created['id']}")).status_code == 204
        for method in ("GET", "PATCH", "DELETE"):
            response = await http.request(method, f"/v1/agents/{created['id']}", json={})
            assert response.status_code == 404, method
            assert response.headers["content-type"] == "application/problem+json"


async def test_list_is_paginated(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        for n in range(4):
            await http.post("/v1/agents", json={"name": f"a{n}"})
        first = (await http.get("/v1/agents", params={"limit": 3})).json()
        second = (
            await http.get("/v1/agents", params={"limit": 3, "cursor": first["next_cursor"]})
        ).json()
    names = [a["name"] for a in first["items"] + second["items"]]
    assert sorted(names) == ["a0", "a1", "a2", "a3", "assistant"]
    assert second["next_cursor"] is None
