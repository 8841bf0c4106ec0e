"""Health details for admins only, and readiness that is exactly the gateway's admission."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from soma.core import Health, HealthStatus
from tests.support.gateway_app import gateway_settings, running_gateway
from tests.support.services import RecordingService
from tests.unit.test_orchestrator import get, make, running, until

ADMIN = "the-admin-credential"


class GateService(RecordingService):
    """Stands where the gateway stands: admits by the lifecycle's predicate, knows admins."""

    def __init__(self, name: str, journal: list[str]) -> None:
        super().__init__(name, journal)
        self.ready: Callable[[], bool] | None = None
        self.asked: list[tuple[str, str]] = []

    def admit_when(self, ready: Callable[[], bool]) -> None:
        self.ready = ready

    async def admits_health_details(self, credentials: str, client: str) -> bool:
        self.asked.append((credentials, client))
        return credentials == ADMIN

    async def health(self) -> Health:
        return Health(HealthStatus.HEALTHY, "llm at http://user:hunter2@10.0.0.7:9000/v1?key=k9")


class SlowStart(RecordingService):
    def __init__(self, name: str, journal: list[str], gate: asyncio.Event) -> None:
        super().__init__(name, journal)
        self.gate = gate

    async def start(self) -> None:
        await self.gate.wait()
        await super().start()


async def _health(base: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with httpx.AsyncClient() as client:
        return await client.get(f"{base}/v1/health", headers=headers)


async def test_details_only_for_credentials_the_gate_admits_and_always_redacted() -> None:
    journal: list[str] = []
    gate = GateService("gateway", journal)
    orch = make([RecordingService("database", journal), gate])
    task, base = await running(orch)
    for key in (None, "someone-else"):
        body = (await _health(base, key)).json()
        assert body["services"]["gateway"]["detail"] == ""
        assert body["status"] == "healthy"
    shown = (await _health(base, ADMIN)).json()["services"]["gateway"]["detail"]
    assert shown == "llm at http://***@10.0.0.7:9000/v1?key=***"
    assert gate.asked == [("someone-else", "127.0.0.1"), (ADMIN, "127.0.0.1")]
    orch.request_stop()
    assert await task == 0


async def test_readiness_and_admission_are_one_predicate_from_start_to_stop() -> None:
    journal: list[str] = []
    gate = GateService("gateway", journal)
    release = asyncio.Event()
    worker = SlowStart("worker", journal, release)
    orch = make([RecordingService("database", journal), gate, worker])
    task = asyncio.create_task(orch.run())
    await until(lambda: "start:gateway" in journal)
    assert gate.ready is not None
    # The gateway has started but the plan has not: neither ready nor admitting.
    assert not orch.ready() and not gate.ready()
    release.set()
    await until(orch.ready)
    assert gate.ready()
    assert orch.address is not None
    host, port = orch.address
    assert (await get(f"http://{host}:{port}/v1/health/ready")).status_code == 200
    observed: list[tuple[bool, bool]] = []
    original_drain = gate.drain

    async def drain() -> None:
        assert gate.ready is not None
        observed.append((orch.ready(), gate.ready()))
        await original_drain()

    gate.drain = drain  # type: ignore[method-assign]
    orch.request_stop()
    assert await task == 0
    assert observed == [(False, False)]
    assert gate.ready is not None and not gate.ready()


async def test_the_gateway_refuses_new_work_but_serves_reads_while_not_admitting(
    tmp_path: Path,
) -> None:
    settings = gateway_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'soma.db'}")
    async with running_gateway(settings) as gw:
        admitting = [False]
        gw.gateway.admit_when(lambda: admitting[0])
        async with gw.client(gw.admin_key) as http:
            refused = await http.post("/v1/sessions", json={})
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"] == "1"
            assert (await http.get("/v1/agents")).status_code == 200
            assert (await http.get("/v1/sessions")).json()["items"] == []
            admitting[0] = True
            assert (await http.post("/v1/sessions", json={})).status_code == 201
