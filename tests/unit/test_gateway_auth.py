"""Authentication and scopes on every gateway route (SQLite, in-process cache)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends

from soma.cache.service import CacheService
from soma.core import HealthStatus
from soma.gateway.auth.deps import current_principal, require_scope
from soma.gateway.auth.principal import Principal
from soma.observability.logging import tenant_id_var
from soma.observability.metrics import Metrics
from soma.storage import DatabaseService
from tests.support.gateway_app import (
    GatewayHarness,
    build_gateway,
    gateway_settings,
    new_tenant,
    running_gateway,
)

PROBLEM = "application/problem+json"
GATEWAY_ROUTES = [
    ("GET", "/v1/agents"),
    ("POST", "/v1/agents"),
    ("GET", "/v1/agents/x"),
    ("PATCH", "/v1/agents/x"),
    ("DELETE", "/v1/agents/x"),
    ("GET", "/v1/sessions"),
    ("POST", "/v1/sessions"),
    ("GET", "/v1/sessions/x"),
    ("DELETE", "/v1/sessions/x"),
    ("GET", "/v1/sessions/x/messages"),
    ("GET", "/v1/admin/tenants"),
    ("POST", "/v1/admin/tenants"),
    ("GET", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys"),
    ("DELETE", "/v1/admin/keys/x"),
    ("POST", "/v1/admin/keys/x/revoke"),
    ("GET", "/v1/whoami"),
]


def _probe_routers(_db: DatabaseService, _cache: CacheService) -> Sequence[APIRouter]:
    """An extra router, as the chat and runs routers are mounted: what does a handler see?"""
    router = APIRouter()

    @router.get("/v1/whoami")
    async def whoami(principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, str]:
        return {"tenant_id": principal.tenant_id, "log_tenant_id": tenant_id_var.get() or ""}

    @router.get("/v1/chat-only")
    async def chat_only(
        principal: Annotated[Principal, Depends(require_scope("chat"))],
    ) -> dict[str, str]:
        return {"key_id": principal.key_id}

    return [router]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[GatewayHarness]:
    settings = gateway_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}")
    async with running_gateway(settings, extra_routers=_probe_routers) as harness:
        yield harness


def _assert_401(response_status: int, headers: dict[str, str], body: dict[str, object]) -> None:
    assert response_status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert headers["content-type"] == PROBLEM
    assert body["status"] == 401 and body["title"] == "Unauthorized"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-key",
        "Bearer soma_AAAAAAAAAAAA_" + "B" * 43,  # well formed, unknown
    ],
)
async def test_every_gateway_route_needs_a_valid_key(
    gw: GatewayHarness, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with gw.client() as http:
        for method, path in GATEWAY_ROUTES:
            response = await http.request(method, path, headers=headers, json={})
            _assert_401(response.status_code, dict(response.headers), response.json())


async def test_a_wrong_secret_for_a_real_prefix_is_refused(gw: GatewayHarness) -> None:
    real = gw.admin_key
    forged = real[:18] + ("A" if real[18] != "A" else "B") + real[19:]
    async with gw.client(forged) as http:
        response = await http.get("/v1/agents")
    _assert_401(response.status_code, dict(response.headers), response.json())


async def test_health_metrics_and_docs_need_no_key(gw: GatewayHarness) -> None:
    async with gw.client() as http:
        for path in ("/v1/health", "/v1/health/live", "/v1/health/ready", "/metrics",
                     "/docs", "/openapi.json"):  # fmt: skip
            response = await http.get(path)
            assert response.status_code == 200, path


async def test_unknown_routes_stay_404(gw: GatewayHarness) -> None:
    async with gw.client() as http:
        assert (await http.get("/v1/nothing-here")).status_code == 404


async def test_openapi_declares_bearer_auth(gw: GatewayHarness) -> None:
    async with gw.client() as http:
        spec = (await http.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"HTTPBearer": []} in spec["paths"]["/v1/agents"]["get"]["security"]


async def test_handlers_see_the_principal_and_the_log_tenant(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        body = (await http.get("/v1/whoami")).json()
    assert body["tenant_id"] == gw.gateway.tenancy.default_tenant_id
    assert body["log_tenant_id"] == body["tenant_id"]


async def test_chat_key_on_admin_routes_is_403(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as admin:
        issued = await admin.post("/v1/admin/keys", json={"name": "app", "scopes": ["chat"]})
    chat_key = issued.json()["key"]
    async with gw.client(chat_key) as http:
        for method, path in GATEWAY_ROUTES:
            if not path.startswith("/v1/admin/"):
                continue
            response = await http.request(method, path, json={})
            assert response.status_code == 403, (method, path)
            assert response.headers["content-type"] == PROBLEM
            assert "admin" in response.json()["detail"]
        assert (await http.get("/v1/agents")).status_code == 200
        assert (await http.get("/v1/chat-only")).status_code == 200


async def test_admin_only_key_on_chat_routes_is_403(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as admin:
        issued = await admin.post("/v1/admin/keys", json={"name": "ops", "scopes": ["admin"]})
    async with gw.client(issued.json()["key"]) as http:
        for path in ("/v1/agents", "/v1/sessions", "/v1/chat-only"):
            response = await http.get(path)
            assert response.status_code == 403, path
            assert "chat" in response.json()["detail"]
        assert (await http.get("/v1/admin/keys")).status_code == 200


async def test_auth_results_are_counted(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as http:
        await http.get("/v1/agents")
    async with gw.client() as http:
        await http.get("/v1/agents")
    exposition = gw.metrics.exposition().decode()
    assert 'soma_gateway_auth_total{result="ok"} 1.0' in exposition
    assert 'soma_gateway_auth_total{result="missing"} 1.0' in exposition


async def test_routes_answer_503_until_the_gateway_has_started(gw: GatewayHarness) -> None:
    gateway, app = build_gateway(gw.settings, Metrics(), gw.database, gw.cache)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
    ) as http:
        early = await http.get("/v1/agents", headers={"Authorization": f"Bearer {gw.admin_key}"})
        assert early.status_code == 503
        assert early.headers["retry-after"] == "1"
        assert (await gateway.health()).status == HealthStatus.STOPPED
        await gateway.start()
        assert (await gateway.health()).status == HealthStatus.HEALTHY
        ready = await http.get("/v1/agents", headers={"Authorization": f"Bearer {gw.admin_key}"})
        assert ready.status_code == 200
        await gateway.stop()
        assert (await http.get("/v1/agents")).status_code == 503


async def test_a_tenant_admin_key_works_only_inside_its_tenant(gw: GatewayHarness) -> None:
    async with gw.client(gw.admin_key) as platform:
        acme = await new_tenant(platform, "acme")
    async with gw.client(acme.chat_key) as http:
        body = (await http.get("/v1/whoami")).json()
    assert body["tenant_id"] == acme.tenant_id
