"""Health details only for admins, secrets in URLs never shown, offline admin key recovery."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.platform import ROOT, free_port, launch
from tests.e2e.stacks import FAST_RECOVERY, Api, Stack, Upstream, model_env

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-in-the-url"


def _with_credentials(stack: Stack, upstreams: dict[str, Upstream]) -> None:
    """The default model's base URL carries credentials (the scripted upstream ignores them)."""
    host = upstreams["fast"].base_url.removeprefix("http://")
    stack.env["SOMA_LLM__MODELS__FAST__BASE_URL"] = f"http://probe:{SECRET}@{host}"


def test_health_details_are_for_platform_admins_and_never_show_secrets(
    stack: Stack, upstreams: dict[str, Upstream]
) -> None:
    _with_credentials(stack, upstreams)
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    chat_key = api.client.post("/v1/admin/keys", json={"name": "c", "scopes": ["chat"]})
    assert chat_key.status_code == 201, chat_key.text
    session = api.session()
    assert api.send(session, "hello", wait="true").status_code == 200  # credentials still work

    def health(key: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(f"{platform.base_url}/v1/health", headers=headers, timeout=10)

    for key in (None, chat_key.json()["key"], "soma_notakey", stack.admin_key[:-3] + "xyz"):
        anonymous = health(key)
        assert anonymous.status_code == 200
        body = anonymous.json()
        assert body["status"] == "healthy"
        assert set(body["services"]) >= {"database", "cache", "bus", "llm", "gateway"}
        for service in body["services"].values():
            assert set(service) == {"status", "critical", "detail"}
            assert service["detail"] == ""
    admin = health(stack.admin_key)
    assert admin.status_code == 200
    details = {name: s["detail"] for name, s in admin.json()["services"].items()}
    assert "http://***@127.0.0.1:" in details["llm"]
    assert details["database"]
    assert SECRET not in admin.text
    for path in ("/v1/health/live", "/v1/health/ready", "/metrics"):
        assert httpx.get(f"{platform.base_url}{path}", timeout=10).status_code == 200
    assert SECRET not in platform.logs()


def test_a_model_that_cannot_start_is_named_without_its_credentials(
    stack: Stack, upstreams: dict[str, Upstream]
) -> None:
    dead = free_port()
    stack.env["SOMA_LLM__MODELS__FAST__BASE_URL"] = f"http://probe:{SECRET}@127.0.0.1:{dead}/v1"
    platform = launch(stack.tmp_path, stack.env)
    stack.platforms.append(platform)
    assert platform.process.wait(timeout=60) == 1
    logs = platform.logs()
    assert f"http://***@127.0.0.1:{dead}/v1" in logs
    assert SECRET not in logs


def _reset(stack: Stack) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOMA_")}
    env.update({**stack.env, "SOMA_DATA_DIR": str(stack.tmp_path / "data")})
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.main", "--reset-admin-key"],
        cwd=stack.tmp_path,
        env={**env, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_reset_admin_key_recovers_a_lost_admin_key(stack: Stack) -> None:
    platform = stack.launch()
    lost = stack.admin_key
    assert platform.terminate() == 0
    key_file = stack.tmp_path / "data" / "admin.key"
    key_file.unlink()  # the only admin key is lost with its file

    done = _reset(stack)
    assert done.returncode == 0, done.stdout + done.stderr
    content = key_file.read_text()
    assert content.count("\n") == 1 and content.startswith("soma_")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    recovered = content.strip()
    assert recovered != lost
    assert str(key_file) in done.stdout
    assert recovered not in done.stdout + done.stderr

    again = _reset(stack)  # replaces the file it wrote
    assert again.returncode == 0, again.stdout + again.stderr
    newest = key_file.read_text().strip()
    assert newest not in (recovered, lost)

    restarted = stack.launch()
    api = Api(restarted, newest)
    keys = api.client.get("/v1/admin/keys")
    assert keys.status_code == 200
    names = [k["name"] for k in keys.json()["items"] if k["revoked_at"] is None]
    assert names.count("reset-admin") == 2 and "bootstrap-admin" in names


def test_reset_admin_key_on_an_empty_data_dir_creates_the_platform(
    tmp_path: Path, upstreams: dict[str, Upstream]
) -> None:
    stack = Stack("embedded", tmp_path, {**model_env(upstreams), **FAST_RECOVERY})
    done = _reset(stack)
    assert done.returncode == 0, done.stdout + done.stderr
    key = (stack.tmp_path / "data" / "admin.key").read_text().strip()
    try:
        platform = stack.launch()
        assert Api(platform, key).client.get("/v1/admin/tenants").status_code == 200
    finally:
        # This test builds its own Stack: no fixture stops what it launched.
        for started in stack.platforms:
            started.process.kill()
            started.process.wait()
