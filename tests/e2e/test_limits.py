"""Limits end to end on both stacks (issue 13): request rates per key and tenant with
`RateLimit-*` on every answer, exact across two platform processes sharing Redis; the cap on
runs in flight; a token budget that stops a run and then refuses messages; limits changed at
run time by `PATCH /v1/admin/tenants/{id}`."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.e2e.platform import launch
from tests.e2e.stacks import Api, Stack

pytestmark = pytest.mark.e2e


def tenant_with_key(admin: Api, **limits: Any) -> tuple[str, str]:
    """A new tenant, its chat+admin key, and its limits set to `limits`."""
    created = admin.client.post("/v1/admin/tenants", json={"name": f"t-{uuid.uuid4().hex[:8]}"})
    assert created.status_code == 201, created.text
    tenant_id = created.json()["id"]
    body = {"name": "k", "scopes": ["chat", "admin"], "tenant_id": tenant_id}
    key = admin.client.post("/v1/admin/keys", json=body)
    assert key.status_code == 201, key.text
    patched = admin.client.patch(f"/v1/admin/tenants/{tenant_id}", json={"limits": limits})
    assert patched.status_code == 200, patched.text
    for name, value in limits.items():
        assert patched.json()["limits"][name] == value
    return tenant_id, key.json()["key"]


def assert_limited(response: Any) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["status"] == 429


def test_key_rate_is_limited_with_headers_on_every_answer(stack: Stack) -> None:
    platform = stack.launch()
    admin = Api(platform, stack.admin_key)
    _, key = tenant_with_key(admin, key_requests_per_s=0.01, key_burst=5)
    api = Api(platform, key)
    answers = [api.client.get("/v1/agents") for _ in range(8)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
    for answer in answers:
        assert answer.headers["RateLimit-Limit"] == "5"
        assert int(answer.headers["RateLimit-Reset"]) >= 1
    assert [int(a.headers["RateLimit-Remaining"]) for a in answers[:5]] == [4, 3, 2, 1, 0]
    assert_limited(answers[-1])
    # The admin key of the platform tenant is not touched by that tenant's limits.
    assert admin.client.get("/v1/agents").status_code == 200


@pytest.mark.parametrize("stack", ["distributed"], indirect=True)
def test_rate_is_exact_across_two_processes_sharing_redis(stack: Stack) -> None:
    first = stack.launch()
    second = launch(stack.tmp_path, stack.env)
    stack.platforms.append(second)
    second.wait_healthy()
    admin = Api(first, stack.admin_key)
    tenant_id, key = tenant_with_key(admin, tenant_requests_per_s=0.01, tenant_burst=7)
    apis = [Api(first, key), Api(second, key)]
    codes = [apis[i % 2].client.get("/v1/agents").status_code for i in range(16)]
    assert codes.count(200) == 7
    assert codes.count(429) == 9
    # Raised at run time through one process: the other applies it within its cache ttl.
    raised = admin.client.patch(
        f"/v1/admin/tenants/{tenant_id}",
        json={"limits": {"tenant_requests_per_s": 1000.0, "tenant_burst": 1000}},
    )
    assert raised.status_code == 200
    for _ in range(100):
        if apis[1].client.get("/v1/agents").status_code == 200:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the raised limit never reached the second process")


def test_runs_in_flight_are_capped_and_freed_when_runs_end(stack: Stack) -> None:
    platform = stack.launch()
    admin = Api(platform, stack.admin_key)
    _, key = tenant_with_key(admin, max_inflight_runs=2)
    api = Api(platform, key)
    agent = api.client.post("/v1/agents", json={"name": "slowpoke", "model": "slow"})
    assert agent.status_code == 201, agent.text
    sessions = [api.session("slowpoke") for _ in range(3)]
    first, second = (api.send(s, "take your time") for s in sessions[:2])
    assert first.status_code == second.status_code == 202
    refused = api.send(sessions[2], "one too many")
    assert_limited(refused)
    assert "in flight" in refused.json()["detail"]
    cancelled = api.client.post(f"/v1/runs/{first.json()['run_id']}/cancel")
    assert cancelled.status_code in (200, 202)
    api.wait_run(first.json()["run_id"], {"cancelled"})
    assert api.send(sessions[2], "now there is room").status_code == 202


def test_token_budget_stops_a_run_then_refuses_messages(stack: Stack) -> None:
    platform = stack.launch()
    admin = Api(platform, stack.admin_key)
    tenant_id, key = tenant_with_key(admin, token_budget=5)
    api = Api(platform, key)
    assert api.client.post("/v1/agents", json={"name": "slowpoke", "model": "slow"}).status_code
    session = api.session("slowpoke")
    # Both accepted before any token is spent; the second runs after the first (same
    # session), when the first has spent more than the budget.
    first = api.send(session, "a long answer please")
    second = api.send(session, "and another")
    assert first.status_code == second.status_code == 202
    done = api.wait_run(first.json()["run_id"], {"completed", "failed"})
    assert done["status"] == "completed"
    assert done["usage"]["total_tokens"] > 5
    stopped = api.wait_run(second.json()["run_id"], {"completed", "failed"})
    assert stopped["status"] == "failed"
    assert "token budget" in stopped["error"]
    refused = api.send(session, "anything left?")
    assert_limited(refused)
    assert "token budget" in refused.json()["detail"]
    # Another tenant's budget is its own.
    assert Api(platform, stack.admin_key).send(admin.session(), "hi").status_code == 202
    # Lifting the budget at run time lets the tenant chat again.
    lifted = admin.client.patch(
        f"/v1/admin/tenants/{tenant_id}", json={"limits": {"token_budget": None}}
    )
    assert lifted.status_code == 200
    assert lifted.json()["limits"]["token_budget"] is None
    assert api.send(session, "thanks").status_code == 202
