"""The Helm chart, rendered by Helm's own engine: valid Kubernetes objects for every variant,
the single entry with roles, probes and pod security, and deploy/k8s/ a fresh render."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from orchestrator.manifest import build_registry
from soma.version import VERSION
from tests.support.deploy_tools import ROOT

KUBERNETES = "1.33.0"
"""Schemas the manifests must satisfy (the chart's kubeVersion floor is 1.27)."""
CRDS = {"ServiceMonitor"}
"""Kinds of operators' CRDs: kubernetes-validate has no schema for them, checked by hand."""


def _renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_k8s", ROOT / "scripts/render_k8s.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RENDER = _renderer()
VARIANTS = sorted(RENDER.VARIANTS)


def objects(variant: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = RENDER.manifests(variant)
    return result


def of_kind(variant: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects(variant) if o["kind"] == kind}


def test_chart_lints_without_warnings() -> None:
    for variant in VARIANTS:
        report = helm.lint(str(RENDER.CHART), RENDER.values_of(variant), strict=True)
        assert report["errors"] == [], report
        # Severity 1 is INFO (e.g. "icon is recommended"); nothing above it is left.
        assert [m for m in report["messages"] if m["severity"] > 1] == [], report


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(variant: str) -> None:
    rendered = objects(variant)
    assert rendered
    for manifest in rendered:
        if manifest["kind"] in CRDS:
            continue
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_service_monitor_scrapes_metrics_of_every_role() -> None:
    assert "ServiceMonitor" not in {o["kind"] for o in objects("default")}
    (monitor,) = of_kind("ha", "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert "app.kubernetes.io/component" not in selector
    services = of_kind("ha", "Service").values()
    assert all(selector.items() <= s["metadata"]["labels"].items() for s in services)


@pytest.mark.parametrize(
    ("variant", "roles"),
    [
        ("default", {"api", "worker"}),
        ("api-only", {"api"}),
        ("worker-only", {"worker"}),
        ("ha", {"api", "worker"}),
    ],
)
def test_roles_are_deployments_of_the_single_entry(variant: str, roles: set[str]) -> None:
    deployments = of_kind(variant, "Deployment")
    assert set(deployments) == {f"somaagent-{role}" for role in roles}
    values = yaml.safe_load((RENDER.CHART / "values.yaml").read_text())["roles"]
    services = {role: ",".join(values[role]["services"]) for role in roles}
    for role in roles:
        pod = deployments[f"somaagent-{role}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == f"somaagent01:{VERSION}"
        assert container["args"] == ["--services", services[role]]
        assert container["livenessProbe"]["httpGet"]["path"] == "/v1/health/live"
        assert container["startupProbe"]["httpGet"]["path"] == "/v1/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
        assert {"name": "SOMA_CONFIG", "value": "/etc/soma/soma.toml"} in container["env"]
        assert container["envFrom"] == [{"secretRef": {"name": "somaagent-env"}}]
        assert_pod_is_locked_down(pod, container)


def test_the_default_roles_run_every_service_of_the_manifest() -> None:
    roles = yaml.safe_load((RENDER.CHART / "values.yaml").read_text())["roles"]
    registry = build_registry()
    selected = [name for role in roles.values() for name in role["services"]]
    started = {definition.name for definition in registry.start_order(selected)}
    assert started == set(registry.names), "add the missing services to a role in values.yaml"
    # The API role serves HTTP only: no worker consumes in it.
    api = {definition.name for definition in registry.start_order(roles["api"]["services"])}
    assert not {"conversation", "tools"} & api


def assert_pod_is_locked_down(pod: dict[str, Any], container: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/soma", "/etc/soma"} <= mounts


def test_migrations_job_runs_migrate_only_before_upgrades() -> None:
    (job,) = of_kind("default", "Job").values()
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["--migrate-only"]
    assert pod["restartPolicy"] == "Never"
    assert_pod_is_locked_down(pod, container)


def test_soma_toml_config_map_is_accepted_by_the_entry_point(tmp_path: Any) -> None:
    (config_map,) = of_kind("ha", "ConfigMap").values()
    (tmp_path / "soma.toml").write_text(config_map["data"]["soma.toml"])
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.main", "--check-config", "--config", "soma.toml"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("variant", "check"),
    [
        ("default", lambda o: "HorizontalPodAutoscaler" not in o and "Secret" not in o),
        ("ha", lambda o: len(o["HorizontalPodAutoscaler"]) == 2),
        ("chart-secret", lambda o: len(o["Secret"]) == 1),
    ],
)
def test_optional_objects_follow_the_values(
    variant: str, check: Callable[[dict[str, list[Any]]], bool]
) -> None:
    kinds: dict[str, list[Any]] = {}
    for manifest in objects(variant):
        kinds.setdefault(manifest["kind"], []).append(manifest)
    assert check(kinds), sorted(kinds)
    if variant == "ha":
        for deployment in of_kind("ha", "Deployment").values():
            assert "replicas" not in deployment["spec"]  # the HPA owns it


def test_chart_reports_the_release_version() -> None:
    chart = yaml.safe_load((RENDER.CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION
    assert chart["version"] == VERSION


def test_deploy_k8s_is_a_fresh_render_of_the_default_values() -> None:
    assert RENDER.main(["--check"]) == 0, "deploy/k8s/ is stale: run `make k8s`"
