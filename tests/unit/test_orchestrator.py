"""Lifecycle of SomaOrchestrator in-process: start/stop order, failures, health aggregation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from orchestrator import lifecycle
from orchestrator.orchestrator import SomaOrchestrator
from orchestrator.registry import ServiceDefinition, ServiceRegistry
from soma.config import Settings
from soma.core import HealthStatus
from soma.observability.metrics import Metrics
from tests.support.services import RecordingService


def make(
    services: list[RecordingService],
    deps: dict[str, tuple[str, ...]] | None = None,
    non_critical: frozenset[str] = frozenset(),
    **settings: object,
) -> SomaOrchestrator:
    registry = ServiceRegistry()
    registry.register_all(
        ServiceDefinition(
            name=svc.name,
            factory=(lambda s: lambda _ctx: s)(svc),
            depends_on=(deps or {}).get(svc.name, ()),
            critical=svc.name not in non_critical,
        )
        for svc in services
    )
    values: dict[str, object] = {"http": {"port": 0}, "shutdown_timeout": 5, **settings}
    config = Settings(**values)  # type: ignore[arg-type]
    return SomaOrchestrator(config, registry, Metrics(), TracerProvider().get_tracer("t"))


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def running(orch: SomaOrchestrator) -> tuple[asyncio.Task[int], str]:
    task = asyncio.create_task(orch.run())
    await until(lambda: orch.ready() or task.done())
    assert orch.address is not None
    host, port = orch.address
    return task, f"http://{host}:{port}"


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url)


async def test_starts_in_order_drains_and_stops_in_reverse() -> None:
    journal: list[str] = []
    svcs = [RecordingService(n, journal) for n in ("database", "bus", "worker")]
    orch = make(svcs, deps={"worker": ("database", "bus")})
    task, _ = await running(orch)
    orch.request_stop()
    assert await task == 0
    assert journal == [
        "start:database",
        "start:bus",
        "start:worker",
        "drain:worker",
        "drain:bus",
        "drain:database",
        "stop:worker",
        "stop:bus",
        "stop:database",
    ]


async def test_critical_failure_aborts_and_stops_started_services() -> None:
    journal: list[str] = []
    svcs = [
        RecordingService("database", journal),
        RecordingService("bus", journal, fail_starts=1),
        RecordingService("worker", journal),
    ]
    orch = make(svcs)
    assert await orch.run() == 1
    assert journal == ["start:database", "failed:bus", "stop:bus", "stop:database"]
    assert not svcs[0].running and not svcs[2].running


async def test_non_critical_failure_is_degraded_then_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lifecycle, "RETRY_INITIAL_S", 0.05)
    journal: list[str] = []
    flaky = RecordingService("memory", journal, fail_starts=2)
    orch = make([RecordingService("database", journal), flaky], non_critical=frozenset({"memory"}))
    task, base = await running(orch)
    first = await orch.report()
    assert first["services"]["memory"]["status"] in ("degraded", "starting")
    assert first["status"] == "healthy"  # only critical services decide
    await until(lambda: flaky.running)
    body = (await get(f"{base}/v1/health")).json()
    assert body["services"]["memory"] == {"status": "healthy", "critical": False, "detail": ""}
    assert journal.count("failed:memory") == 2
    orch.request_stop()
    assert await task == 0


async def test_health_aggregates_critical_services() -> None:
    journal: list[str] = []
    sick = RecordingService("bus", journal)
    extra = RecordingService("memory", journal, health_status=HealthStatus.UNHEALTHY)
    orch = make(
        [RecordingService("database", journal), sick, extra], non_critical=frozenset({"memory"})
    )
    task, base = await running(orch)
    response = await get(f"{base}/v1/health")
    assert response.status_code == 200
    assert response.json()["services"]["memory"]["status"] == "unhealthy"
    sick.health_status = HealthStatus.UNHEALTHY
    response = await get(f"{base}/v1/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    # Without an admin key the details stay out (tests/unit/test_health_details.py).
    assert body["services"]["bus"] == {"status": "unhealthy", "critical": True, "detail": ""}
    metrics = (await get(f"{base}/metrics")).text
    assert 'soma_service_up{service="bus"} 0.0' in metrics
    assert 'soma_service_up{service="database"} 1.0' in metrics
    orch.request_stop()
    assert await task == 0


async def test_readiness_goes_503_as_soon_as_stop_is_requested() -> None:
    journal: list[str] = []
    gate = asyncio.Event()
    slow = RecordingService("worker", journal)
    observed: list[int] = []

    async def drain() -> None:
        observed.append((await get(f"{base}/v1/health/ready")).status_code)
        observed.append((await get(f"{base}/v1/health/live")).status_code)
        gate.set()

    slow.drain = drain  # type: ignore[method-assign]
    orch = make([slow])
    task, base = await running(orch)
    assert (await get(f"{base}/v1/health/ready")).status_code == 200
    orch.request_stop()
    await gate.wait()
    assert await task == 0
    assert observed == [503, 200]


async def test_stop_past_shutdown_timeout_is_reported_unclean() -> None:
    journal: list[str] = []
    stuck = RecordingService("worker", journal, stop_delay_s=30)
    orch = make([stuck], shutdown_timeout=0.3)
    task, _ = await running(orch)
    orch.request_stop()
    assert await task == 1
    assert "stop:worker" not in journal


async def test_port_in_use_fails_startup_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    journal: list[str] = []
    first = make([RecordingService("a", journal)])
    task, base = await running(first)
    port = int(base.rsplit(":", 1)[1])
    second = make([RecordingService("b", journal)], http={"port": port})
    assert await second.run() == 1
    assert any("cannot listen on" in r.getMessage() for r in caplog.records)
    first.request_stop()
    assert await task == 0
