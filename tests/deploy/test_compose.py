"""The compose files: valid Compose, only the allowed services, health-checked, and an
environment the real entry point accepts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy_tools import DEPLOY, ROOT, tool

MAIN = DEPLOY / "docker-compose.yaml"
OBSERVABILITY = DEPLOY / "docker-compose.observability.yaml"
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::([?-])([^}]*))?\}")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}` forms."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match[1], match[2], match[3]
        if env.get(name):
            return env[name]
        assert kind != "?", f"{name} is required: {rest}"
        return rest if kind == "-" else ""

    return _VARIABLE.sub(one, value)


@pytest.mark.parametrize("path", [MAIN, OBSERVABILITY], ids=lambda p: p.name)
def test_compose_file_is_valid_against_the_compose_specification(path: Path) -> None:
    result = subprocess.run(
        [str(tool("check-jsonschema")), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_main_file_runs_the_orchestrator_and_its_servers_only() -> None:
    services = load(MAIN)["services"]
    assert set(services) == {"orchestrator", "kafka", "redis", "postgres", "opa"}
    extra = load(OBSERVABILITY)["services"]
    assert set(extra) == {"orchestrator", "prometheus", "grafana", "otel-collector"}
    # The optional file only adds the trace endpoint to the main file's orchestrator.
    assert extra["orchestrator"] == {
        "environment": {"SOMA_OBSERVABILITY__OTLP_ENDPOINT": "http://otel-collector:4318"}
    }


@pytest.mark.parametrize("path", [MAIN, OBSERVABILITY], ids=lambda p: p.name)
def test_every_service_is_health_checked_and_waited_for(path: Path) -> None:
    compose = load(path)
    for name, service in compose["services"].items():
        if "image" not in service:
            continue  # an override of the main file's service
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for needed, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {needed}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            # State lives in named volumes; only read-only config is bind-mounted.
            assert source in compose["volumes"] or volume.endswith(":ro"), f"{name}: {volume}"
    assert set(load(MAIN)["services"]["orchestrator"]["depends_on"]) == {
        "kafka",
        "redis",
        "postgres",
        "opa",
    }


def test_no_secret_is_written_in_the_files() -> None:
    for path in (MAIN, OBSERVABILITY):
        for name, service in load(path)["services"].items():
            for key, value in (service.get("environment") or {}).items():
                if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY|DATABASE__URL", key):
                    assert _VARIABLE.search(str(value)), f"{name}.{key} holds a literal secret"


def test_orchestrator_runs_the_image_entry_with_a_read_only_root() -> None:
    orchestrator = load(MAIN)["services"]["orchestrator"]
    assert orchestrator["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert orchestrator["read_only"] is True
    assert "/tmp" in orchestrator["tmpfs"]
    assert any(v.endswith(":/var/lib/soma") for v in orchestrator["volumes"])
    assert "/v1/health/live" in " ".join(orchestrator["healthcheck"]["test"])


@pytest.mark.parametrize("mode", ["--check-config", "--dry-run"])
def test_the_entry_point_accepts_the_environment_compose_passes(mode: str, tmp_path: Path) -> None:
    orchestrator = load(MAIN)["services"]["orchestrator"]
    given = {"POSTGRES_PASSWORD": "example-only"}
    env = {k: interpolate(str(v), given) for k, v in orchestrator["environment"].items()}
    # The mounted soma.toml, read from where compose mounts it from.
    mounts = dict(v.rsplit(":", 2)[:2] for v in orchestrator["volumes"] if v.endswith(":ro"))
    config = {target: source for source, target in mounts.items()}[env["SOMA_CONFIG"]]
    env["SOMA_CONFIG"] = str((DEPLOY / config).resolve())
    # The image's own environment (deploy/Dockerfile ENV) comes first.
    image_env = {"SOMA_DATA_DIR": str(tmp_path / "data"), "SOMA_HTTP__HOST": "0.0.0.0"}
    base = {k: v for k, v in os.environ.items() if not k.startswith("SOMA_")}
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.main", mode],
        cwd=tmp_path,
        env={**base, "PYTHONPATH": str(ROOT), **image_env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if mode == "--dry-run":
        assert "kafka kafka:9092" in result.stdout
        assert "example-only" not in result.stdout
