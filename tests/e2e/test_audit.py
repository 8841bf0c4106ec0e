"""The audit trail end to end on both stacks (issue 13): consequential actions leave chained
entries (a message's id, never its content), the trail pages and exports as NDJSON, the verify
call finds a row edited in the database, and another tenant's trail is 404."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import uuid
from typing import Any

import asyncpg
import orjson
import pytest

from tests.e2e.stacks import Api, Stack

pytestmark = pytest.mark.e2e


def trail(api: Api, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": "3", **params, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/admin/audit", params=query)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


def tamper(stack: Stack, entry_id: int) -> None:
    """Edit one entry behind the platform's back, as someone with database access could."""
    sql = "UPDATE audit_log SET resource = 'agent:someone-else' WHERE id = "
    if stack.name == "embedded":
        with sqlite3.connect(stack.tmp_path / "data" / "soma.db") as conn:
            conn.execute(sql + "?", (entry_id,))
        return
    url = stack.env["SOMA_DATABASE__URL"].replace("postgresql+asyncpg", "postgresql")

    async def edit() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql + "$1", entry_id)
        finally:
            await conn.close()

    asyncio.run(edit())


def test_actions_are_chained_exported_and_tampering_is_found(stack: Stack) -> None:
    platform = stack.launch()
    admin = Api(platform, stack.admin_key)
    created = admin.client.post("/v1/agents", json={"name": "auditor", "model": "slow"})
    assert created.status_code == 201
    agent_id = created.json()["id"]
    assert admin.client.patch(f"/v1/agents/{agent_id}", json={"instructions": "x"}).status_code
    session = admin.session("auditor")
    secret = f"confidential {uuid.uuid4().hex}"
    sent = admin.send(session, secret)
    assert sent.status_code == 202
    run_id, message_id = sent.json()["run_id"], sent.json()["message_id"]
    assert admin.client.post(f"/v1/runs/{run_id}/cancel").status_code in (200, 202)
    admin.wait_run(run_id, {"cancelled"})
    assert admin.client.delete(f"/v1/agents/{agent_id}").status_code == 204
    tenant = admin.client.post("/v1/admin/tenants", json={"name": f"b-{uuid.uuid4().hex[:6]}"})
    other = tenant.json()["id"]
    body = {"name": "b", "scopes": ["chat", "admin"], "tenant_id": other}
    other_key = admin.client.post("/v1/admin/keys", json=body).json()["key"]
    limits = {"limits": {"max_inflight_runs": 3}}
    assert admin.client.patch(f"/v1/admin/tenants/{other}", json=limits).status_code == 200

    entries = trail(admin)
    actions = [e["action"] for e in entries]
    for action in ("agent.create", "agent.update", "message.accept", "run.cancel",
                   "agent.delete", "api_key.create"):  # fmt: skip
        assert action in actions, actions
    accepted = next(e for e in entries if e["action"] == "message.accept")
    assert accepted["resource"] == f"message:{message_id}"
    assert accepted["data"] == {"run_id": run_id, "session_id": session}
    assert secret not in orjson.dumps(entries).decode()
    for before, after in itertools.pairwise(entries):
        assert after["prev_hash"] == before["hash"]
    cancels = trail(admin, action="run.cancel")
    assert [e["resource"] for e in cancels] == [f"run:{run_id}"]
    assert all(e["actor"].startswith("key:") for e in cancels)

    exported = admin.client.get("/v1/admin/audit", params={"format": "ndjson"})
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in exported.text.splitlines()]
    assert [e["id"] for e in lines] == [e["id"] for e in entries]

    # The other tenant's chain is its own: its limit change is there, nothing of ours.
    b = Api(platform, other_key)
    theirs = trail(b)
    assert [e["action"] for e in theirs] == ["tenant.create", "api_key.create", "tenant.limits"]
    assert (
        b.client.get("/v1/admin/audit", params={"tenant_id": entries[0]["tenant_id"]}).status_code
        == 404
    )
    assert (
        b.client.get(
            "/v1/admin/audit/verify", params={"tenant_id": entries[0]["tenant_id"]}
        ).status_code
        == 404
    )

    verified = admin.client.get("/v1/admin/audit/verify").json()
    assert verified == {"ok": True, "checked": len(entries), "first_bad_id": None}
    victim = next(e for e in entries if e["action"] == "agent.delete")
    tamper(stack, victim["id"])
    broken = admin.client.get("/v1/admin/audit/verify").json()
    assert broken["ok"] is False
    assert broken["first_bad_id"] == victim["id"]
    assert b.client.get("/v1/admin/audit/verify").json()["ok"] is True
