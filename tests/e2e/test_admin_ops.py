"""Operators' views end to end (issue 13): `GET /v1/admin/services` on both stacks, and dead
letters through `/v1/admin/dlq` on the distributed stack, where a poison message can be put
on the broker from outside."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from tests.e2e.stacks import Api, Stack

pytestmark = pytest.mark.e2e


def other_admin(admin: Api) -> Api:
    tenant = admin.client.post("/v1/admin/tenants", json={"name": f"o-{uuid.uuid4().hex[:6]}"})
    body = {"name": "o", "scopes": ["chat", "admin"], "tenant_id": tenant.json()["id"]}
    key: str = admin.client.post("/v1/admin/keys", json=body).json()["key"]
    api = Api.__new__(Api)
    api.client = httpx.Client(
        base_url=str(admin.client.base_url), headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    return api


def test_services_show_status_role_backend_and_figures(stack: Stack) -> None:
    platform = stack.launch()
    admin = Api(platform, stack.admin_key)
    answer = admin.client.get("/v1/admin/services")
    assert answer.status_code == 200, answer.text
    services = {s["name"]: s for s in answer.json()["services"]}
    assert {"database", "cache", "bus", "outbox", "gateway", "conversation", "dead_letters"} <= set(
        services
    )
    assert all(s["status"] == "healthy" for n, s in services.items() if n != "tools")
    assert services["database"]["backend"].startswith(
        "sqlite" if stack.name == "embedded" else "postgresql"
    )
    assert services["outbox"]["figures"]["outbox_pending"] >= 0
    assert services["conversation"]["figures"]["runs_in_flight"] >= 0
    assert all(s["role"] == "selected" for s in services.values())
    assert httpx.get(f"{platform.base_url}/v1/admin/services").status_code == 401
    assert other_admin(admin).client.get("/v1/admin/services").status_code == 403


async def _poison(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"not an envelope", key=b"poison")
    finally:
        await producer.stop()


def wait_letters(api: Api, predicate: Any, timeout: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        items: list[dict[str, Any]] = api.client.get("/v1/admin/dlq").json()["items"]
        if predicate(items):
            return items
        if time.monotonic() > deadline:
            raise AssertionError(f"dead letters never matched: {items}")
        time.sleep(0.2)


@pytest.mark.parametrize("stack", ["distributed"], indirect=True)
def test_dead_letters_are_listed_replayed_once_and_discarded(stack: Stack) -> None:
    platform = stack.launch({"SOMA_BUS__MAX_ATTEMPTS": "2", "SOMA_BUS__RETRY_BACKOFF_S": "0.05"})
    admin = Api(platform, stack.admin_key)
    assert admin.client.get("/v1/admin/dlq").json()["items"] == []
    prefix = stack.env["SOMA_BUS__KAFKA__TOPIC_PREFIX"]
    bootstrap = stack.env["SOMA_BUS__KAFKA__BOOTSTRAP_SERVERS"]
    asyncio.run(_poison(bootstrap, f"{prefix}conversation.inbound"))
    (letter,) = wait_letters(admin, lambda items: len(items) == 1)
    assert letter["topic"] == "conversation.inbound"
    assert letter["key"] == "poison" and letter["payload"] == "not an envelope"
    assert "malformed run request" in letter["error"]
    assert letter["attempts"] == 2 and letter["replayed_at"] is None
    assert letter["tenant_id"] is None

    other = other_admin(admin)
    assert other.client.get("/v1/admin/dlq").json()["items"] == []
    assert other.client.post(f"/v1/admin/dlq/{letter['id']}/replay").status_code == 404
    assert other.client.delete(f"/v1/admin/dlq/{letter['id']}").status_code == 404

    first = admin.client.post(f"/v1/admin/dlq/{letter['id']}/replay")
    second = admin.client.post(f"/v1/admin/dlq/{letter['id']}/replay")
    assert first.status_code == second.status_code == 200
    assert [first.json()["replayed_now"], second.json()["replayed_now"]] == [True, False]
    # Still poison: it fails again and comes back as the same letter, seen once more.
    (again,) = wait_letters(admin, lambda items: items and items[0]["attempts"] == 4)
    assert again["id"] == letter["id"] and again["replayed_at"] is None
    assert again["last_seen_at"] > letter["last_seen_at"]

    assert admin.client.delete(f"/v1/admin/dlq/{letter['id']}").status_code == 204
    assert admin.client.get("/v1/admin/dlq").json()["items"] == []
    trail = admin.client.get("/v1/admin/audit", params={"action": "dead_letter.discard"})
    assert [e["resource"] for e in trail.json()["items"]] == [f"dead_letter:{letter['id']}"]
