"""The real entry point as a subprocess: health, metrics, graceful SIGTERM, CLI modes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from soma.version import VERSION
from tests.e2e.platform import ROOT, Platform, launch

pytestmark = pytest.mark.e2e


def test_process_serves_health_and_metrics_and_stops_on_sigterm(
    tmp_path: Path, platform_factory: list[Platform]
) -> None:
    platform = launch(tmp_path)
    platform_factory.append(platform)
    health = platform.wait_healthy()
    assert health.json()["status"] == "healthy"
    assert health.json()["version"] == VERSION
    assert httpx.get(f"{platform.base_url}/v1/health/ready").status_code == 200
    assert httpx.get(f"{platform.base_url}/v1/health/live").status_code == 200
    metrics = httpx.get(f"{platform.base_url}/metrics")
    assert metrics.status_code == 200
    assert 'soma_http_requests_total{method="GET",route="/v1/health"' in metrics.text
    assert "process_resident_memory_bytes" in metrics.text
    assert platform.terminate(timeout=25) == 0
    assert '"msg":"stopped"' in platform.logs()


def run_cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:

    base = {k: v for k, v in os.environ.items() if not k.startswith("SOMA_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.main", *args],
        cwd=tmp_path,
        env={**base, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--dry-run", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    assert "services in start order:" in result.stdout
    assert "plan is valid" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_invalid_config_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--dry-run", env={"SOMA_HTTP__PORT": "x", "SOMA_BUS__BACKEND": "y"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("config error: ") for line in lines)


def test_print_config_shows_sources_without_secrets(tmp_path: Path) -> None:
    (tmp_path / "soma.toml").write_text("[http]\nport = 9100\n")
    result = run_cli(
        tmp_path,
        "--print-config",
        "--host",
        "0.0.0.0",
        env={"SOMA_DATABASE__URL": "postgresql+asyncpg://u:topsecret@h/db"},
    )
    assert result.returncode == 0, result.stderr
    assert "topsecret" not in result.stdout
    assert "http.port = 9100  # file" in result.stdout
    assert 'http.host = "0.0.0.0"  # flag' in result.stdout
    assert 'database.url = "**********"  # env' in result.stdout


def test_unknown_service_selection_is_rejected(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--dry-run", "--services", "nope")
    assert result.returncode == 2
    assert "unknown service(s) nope" in result.stderr
