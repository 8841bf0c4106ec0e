"""Fail closed: broken policies stop startup; any engine error at decision time is a deny."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from pathlib import Path

import pytest

from soma.config.settings import Settings
from soma.core.errors import StartupError
from soma.core.service import HealthStatus
from soma.observability.metrics import Metrics
from soma.policy import PolicyError, PolicyService, create_policy
from soma.policy.embedded import compile_engine, evaluate, read_sources
from tests.support.opa_server import OpaTestServer
from tests.unit.policy_cases import ALLOWED, ask

HEADER = "package soma.policy\n\nimport rego.v1\n\n"


def write_policy(directory: Path, body: str, name: str = "policy.rego") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(body)
    return directory


def embedded(rego_dir: Path | None, metrics: Metrics | None = None) -> PolicyService:
    settings = Settings.model_validate({"policy": {"engine": "embedded", "rego_dir": rego_dir}})
    return create_policy(settings, metrics or Metrics())


def opa(url: str, metrics: Metrics | None = None, timeout_s: float = 2.0) -> PolicyService:
    settings = Settings.model_validate(
        {"policy": {"engine": "opa", "opa_url": url, "timeout_s": timeout_s}}
    )
    return create_policy(settings, metrics or Metrics())


def errors_counted(metrics: Metrics, action: str) -> float | None:
    labels = {"action": action, "result": "error"}
    return metrics.registry.get_sample_value("soma_policy_decisions_total", labels)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# A valid policy whose evaluation fails (division by zero) or is ill-typed for some inputs.
MISBEHAVING = (
    HEADER
    + """
decision := {"allow": 1 / count(input.resource.items) > 0, "require_approval": false,
             "reason": "divided"} if {
	input.action == "divide"
} else := "yes" if {
	input.action == "string"
} else := {"allow": "true", "require_approval": false, "reason": "x"} if {
	input.action == "typed"
} else := {"allow": false, "require_approval": false, "reason": "fine"} if {
	input.action != "undefined"
}
"""
)


@pytest.mark.parametrize(
    ("body", "name", "message"),
    [
        (HEADER + "decision := {\n", "broken.rego", "broken.rego:"),
        ("package soma.policy\n\ndecision := 1\n", "v0.rego", "missing `import rego.v1`"),
        ("package other\n\nimport rego.v1\n\nx := 1\n", "other.rego", "package soma.policy"),
        (HEADER + 'decision := "allow"\n', "typed.rego", "not an object"),
        (HEADER + "decision := 1 / 0\n", "zero.rego", "divide by zero"),
    ],
)
async def test_broken_policy_fails_startup(
    tmp_path: Path, body: str, name: str, message: str
) -> None:
    service = embedded(write_policy(tmp_path, body, name))
    with pytest.raises(StartupError) as caught:
        await service.start()
    assert str(caught.value).startswith("policy: embedded regorus")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "Stack backtrace" not in str(caught.value)


async def test_missing_or_empty_policy_dir_fails_startup(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="is not a directory"):
        await embedded(tmp_path / "absent").start()
    with pytest.raises(StartupError, match=r"no \.rego files"):
        await embedded(tmp_path).start()


async def test_decide_before_start_denies_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    service = embedded(None, metrics)
    with caplog.at_level(logging.ERROR, logger="soma.policy"):
        decision = await service.decide(ask("conversation.send"))
    assert (decision.allow, decision.require_approval) == (False, False)
    assert decision.reason == "policy engine error: policies are not loaded"
    assert errors_counted(metrics, "conversation.send") == 1
    assert any(r.name == "soma.policy" and "not loaded" in r.getMessage() for r in caplog.records)
    assert (await service.health()).status is HealthStatus.UNHEALTHY


@pytest.mark.parametrize(
    ("action", "fragment"),
    [
        ("divide", "divide by zero"),
        ("string", "decision is str, not an object"),
        ("typed", "must be booleans"),
        ("undefined", "undefined"),
    ],
)
async def test_engine_errors_deny_log_and_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, action: str, fragment: str
) -> None:
    metrics = Metrics()
    service = embedded(write_policy(tmp_path, MISBEHAVING), metrics)
    await service.start()
    assert (await service.decide(ask("fine-action"))).reason == "fine"
    with caplog.at_level(logging.ERROR, logger="soma.policy"):
        decision = await service.decide(ask(action, resource={"items": []}))
    assert (decision.allow, decision.require_approval) == (False, False)
    assert decision.reason.startswith("policy engine error: ")
    assert fragment in decision.reason
    assert errors_counted(metrics, action) == 1
    assert [r.levelno for r in caplog.records if r.name == "soma.policy"] == [logging.ERROR]


async def test_input_that_is_not_json_denies(tmp_path: Path) -> None:
    service = embedded(None)
    await service.start()
    decision = await service.decide(ask("memory.read", resource={"blob": object()}))
    assert decision.allow is False
    assert decision.reason.startswith("policy engine error:")


def test_engine_used_from_a_foreign_thread_is_an_error_not_a_crash() -> None:
    engine = compile_engine(read_sources(None))
    outcome: list[BaseException] = []

    def use_elsewhere() -> None:
        try:
            evaluate(engine, ask("conversation.send"))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=use_elsewhere)
    thread.start()
    thread.join()
    assert len(outcome) == 1
    assert isinstance(outcome[0], PolicyError)


async def test_opa_unreachable_fails_startup_and_denies() -> None:
    metrics = Metrics()
    service = opa(f"http://127.0.0.1:{free_port()}", metrics)
    with pytest.raises(StartupError, match=r"^policy: opa http://127\.0\.0\.1:\d+: .*unreachable"):
        await service.start()
    decision = await service.decide(ask("conversation.send"))
    assert decision.allow is False
    assert decision.reason.startswith("policy engine error:")
    assert errors_counted(metrics, "conversation.send") == 1
    assert (await service.health()).status is HealthStatus.UNHEALTHY
    await service.stop()


async def test_opa_going_away_denies_and_turns_unhealthy() -> None:
    metrics = Metrics()
    server = OpaTestServer().start()
    service = opa(server.url, metrics)
    try:
        await service.start()
        assert await service.decide(ask("conversation.send")) == ALLOWED
        assert (await service.health()).status is HealthStatus.HEALTHY
        server.stop()
        decision = await service.decide(ask("conversation.send"))
        health = await service.health()
    finally:
        await service.stop()
    assert decision.allow is False
    assert decision.reason.startswith("policy engine error: OPA request failed")
    assert errors_counted(metrics, "conversation.send") == 1
    assert health.status is HealthStatus.UNHEALTHY


async def test_opa_timeout_denies() -> None:
    metrics = Metrics()
    with OpaTestServer(delay_s=1.0) as server:
        service = opa(server.url, metrics, timeout_s=0.2)
        await service.start()
        try:
            decision = await service.decide(ask("memory.read"))
        finally:
            await service.stop()
    assert decision.allow is False
    assert "timed out" in decision.reason
    assert errors_counted(metrics, "memory.read") == 1


@pytest.mark.parametrize(
    ("action", "fragment"),
    [
        ("divide", "OPA answered HTTP 500"),
        ("string", "not an object"),
        ("undefined", "without a result"),
    ],
)
async def test_opa_errors_deny(tmp_path: Path, action: str, fragment: str) -> None:
    metrics = Metrics()
    with OpaTestServer(write_policy(tmp_path, MISBEHAVING)) as server:
        service = opa(server.url, metrics)
        await service.start()
        try:
            fine = await service.decide(ask("fine-action"))
            decision = await service.decide(ask(action, resource={"items": []}))
        finally:
            await service.stop()
    assert fine.reason == "fine"
    assert decision.allow is False
    assert fragment in decision.reason
    assert errors_counted(metrics, action) == 1


async def test_cancellation_is_not_swallowed() -> None:
    with OpaTestServer(delay_s=1.0) as server:
        service = opa(server.url)
        await service.start()
        try:
            task = asyncio.create_task(service.decide(ask("memory.read")))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await service.stop()


async def test_unreadable_policy_file_fails_startup(tmp_path: Path) -> None:
    (tmp_path / "latin1.rego").write_bytes(HEADER.encode() + b"# caf\xe9\n")
    with pytest.raises(StartupError, match="cannot read policies"):
        await embedded(tmp_path).start()
