"""The policy service: lifecycle, health, metrics, the input document and result parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from soma.config.settings import Settings
from soma.core.service import HealthStatus, Service
from soma.observability.metrics import Metrics
from soma.policy import Decision, PolicyError, PolicyInput, Subject, create_policy, describe
from soma.policy.embedded import read_sources
from soma.policy.port import decision_from_result
from tests.unit.policy_cases import DANGEROUS, ask


async def test_embedded_service_lifecycle_and_health() -> None:
    service = create_policy(Settings(), Metrics())
    assert isinstance(service, Service)
    assert service.name == "policy"
    await service.start()
    health = await service.health()
    assert health.status is HealthStatus.HEALTHY
    assert health.detail.startswith("embedded regorus")
    await service.stop()
    assert (await service.health()).status is HealthStatus.UNHEALTHY


async def test_decisions_are_counted_by_action_and_result() -> None:
    metrics = Metrics()
    service = create_policy(Settings(), metrics)
    await service.start()
    await service.decide(ask("tool.execute"))
    await service.decide(ask("tool.execute", resource=DANGEROUS))
    await service.decide(ask("tool.execute", scopes=()))
    await service.decide(ask("tool.execute", scopes=()))

    def count(result: str) -> float | None:
        labels = {"action": "tool.execute", "result": result}
        return metrics.registry.get_sample_value("soma_policy_decisions_total", labels)

    assert (count("allow"), count("approval"), count("deny"), count("error")) == (1, 1, 2, None)


async def test_policies_reload_on_restart(tmp_path: Path) -> None:
    header = "package soma.policy\n\nimport rego.v1\n\n"
    policy_file = tmp_path / "p.rego"
    policy_file.write_text(
        header + 'decision := {"allow": false, "require_approval": false, "reason": "v1"}\n'
    )
    service = create_policy(Settings.model_validate({"policy": {"rego_dir": tmp_path}}), Metrics())
    await service.start()
    assert (await service.decide(ask("memory.read"))).reason == "v1"
    policy_file.write_text(
        header + 'decision := {"allow": true, "require_approval": false, "reason": "v2"}\n'
    )
    await service.stop()
    await service.start()
    assert await service.decide(ask("memory.read")) == Decision(True, False, "v2")


def test_packaged_policies_are_rego_v1() -> None:
    sources = read_sources(None)
    assert [name for name, _ in sources] == ["soma.rego"]
    assert all("import rego.v1" in text for _, text in sources)


def test_describe_names_the_backend() -> None:
    assert describe(Settings()) == "embedded regorus (packaged policies)"
    opa = Settings.model_validate({"policy": {"engine": "opa", "opa_url": "http://opa:8181/"}})
    assert describe(opa) == "opa http://opa:8181"


def test_input_document_shape() -> None:
    document = PolicyInput(
        action="memory.read",
        tenant="t1",
        subject=Subject(key_id="k", scopes=("chat", "admin")),
        resource={"tenant_id": "t1"},
    ).to_json()
    assert document == {
        "action": "memory.read",
        "tenant": "t1",
        "subject": {"key_id": "k", "scopes": ["chat", "admin"]},
        "resource": {"tenant_id": "t1"},
        "context": {},
    }


def test_result_parsing_is_strict_and_approval_wins() -> None:
    both = {"allow": True, "require_approval": True, "reason": "r"}
    assert decision_from_result(both) == Decision(False, True, "r")
    assert decision_from_result(both).result == "approval"
    with pytest.raises(PolicyError, match="reason"):
        decision_from_result({"allow": True, "require_approval": False})
    with pytest.raises(PolicyError, match="booleans"):
        decision_from_result({"allow": 1, "require_approval": False, "reason": "r"})
    with pytest.raises(PolicyError, match="undefined"):
        decision_from_result(None)
