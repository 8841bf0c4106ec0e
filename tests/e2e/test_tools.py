"""Agents that act, end to end on both stacks (issue 11): the real process, the real sandbox,
the real `files`, `http_fetch` and an MCP server over stdio; the model is the scripted
upstream in `--tools` mode (a message `call [["NAME", {json}], ...]` makes it call them).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.platform import ROOT
from tests.e2e.stacks import Api, Stack, Upstream, read_sse, start_upstream

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tool_model() -> Iterator[Upstream]:
    upstream = start_upstream("--tools")
    yield upstream
    upstream.process.terminate()
    upstream.process.wait(timeout=10)


def tools_env(upstream: Upstream) -> dict[str, str]:
    prefix = "SOMA_LLM__MODELS__TOOLY__"
    server = json.dumps(
        [sys.executable, str(ROOT / "tests" / "support" / "mcp_server.py"), "--stdio"]
    )
    return {
        prefix + "PROVIDER": "openai",
        prefix + "BASE_URL": upstream.base_url,
        prefix + "MODEL": "scripted-tools",
        "SOMA_LLM__DEFAULT_MODEL": "tooly",
        "SOMA_TOOLS__MCP_SERVERS__DEMO__COMMAND": server,
        "SOMA_TOOLS__CALL_TIMEOUT_S": "20",
    }


def agent(api: Api, name: str, tools: list[str], approval: list[str] | None = None) -> str:
    body = {"name": name, "tools": tools, "require_approval": approval or []}
    response = api.client.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    return name


def call(*calls: tuple[str, dict[str, Any]]) -> str:
    return "call " + json.dumps([[name, args] for name, args in calls])


def finished(api: Api, run_id: str, timeout: float = 120) -> dict[str, Any]:
    return api.wait_run(run_id, {"completed", "failed", "cancelled"}, timeout=timeout)


def results(api: Api, run_id: str) -> list[dict[str, Any]]:
    response = api.client.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "0"})
    return [e["data"] for e in read_sse(response) if e["event"] == "tool.result"]


def test_parallel_calls_stream_their_calls_and_results_and_run_once(
    stack: Stack, tool_model: Upstream
) -> None:
    platform = stack.launch(tools_env(tool_model))
    api = Api(platform, stack.admin_key)
    catalog = api.client.get("/v1/tools").json()
    names = {t["name"] for t in catalog["items"]}
    assert {"python", "shell", "files", "http_fetch", "demo.add"} <= names
    assert catalog["isolation"] == "bubblewrap"
    session = api.session(agent(api, "worker", ["python", "files", "demo.*"]))
    content = call(
        ("python", {"code": "print(6 * 7)"}),
        ("files", {"op": "write", "path": "note.txt", "content": "kept"}),
        ("demo.add", {"a": 2, "b": 3}),
    )
    with api.client.stream(
        "POST", f"/v1/sessions/{session}/messages", params={"stream": "true"},
        json={"content": content},
    ) as response:  # fmt: skip
        events = read_sse(response)
    kinds = [e["event"] for e in events]
    assert kinds.count("tool.call") == 3 and kinds.count("tool.result") == 3, kinds
    assert kinds.index("tool.result") > max(i for i, k in enumerate(kinds) if k == "tool.call")
    assert kinds[-1] == "run.completed"
    by_name = {e["data"]["name"]: e["data"]["id"] for e in events if e["event"] == "tool.call"}
    outputs = {e["data"]["id"]: e["data"] for e in events if e["event"] == "tool.result"}
    assert outputs[by_name["python"]]["status"] == "ok"
    assert outputs[by_name["python"]]["output"].strip() == "42"
    assert outputs[by_name["demo.add"]]["output"].strip() == "5"
    reply = next(e for e in events if e["event"] == "message.completed")["data"]["message"]
    assert reply["content"].startswith("results: ")
    # The file persists for the session's next call, which reads it.
    again = api.send(session, call(("files", {"op": "read", "path": "note.txt"})), wait="true")
    assert again.status_code == 200, again.text
    assert "kept" in again.json()["message"]["content"]
    # Each execution is in the tenant's audit chain, once, acting for the agent.
    executed = api.client.get("/v1/admin/audit", params={"action": "tool.execute"}).json()
    resources = [e["resource"] for e in executed["items"]]
    assert len(resources) == 4 and {f"tool_call:{i}" for i in by_name.values()} < set(resources)
    assert {e["data"]["status"] for e in executed["items"]} == {"ok"}
    assert api.client.get("/v1/admin/audit/verify").json()["ok"] is True


def test_approval_survives_a_restart_and_other_tenants_cannot_see_or_decide_it(
    stack: Stack, tool_model: Upstream
) -> None:
    env = tools_env(tool_model)
    platform = stack.launch(env)
    api = Api(platform, stack.admin_key)
    session = api.session(agent(api, "careful", ["shell"], approval=["shell"]))
    run_id = api.send(session, call(("shell", {"command": "echo approved"}))).json()["run_id"]
    api.wait_run(run_id, {"awaiting_approval"})
    assert platform.terminate() == 0
    platform = stack.launch(env)
    api = Api(platform, stack.admin_key)
    pending = api.client.get("/v1/approvals", params={"status": "pending"}).json()["items"]
    assert [(a["run_id"], a["tool"]) for a in pending] == [(run_id, "shell")]
    approval = pending[0]["id"]
    other = _other_tenant_key(api)
    stranger = Api(platform, other)
    assert stranger.client.get("/v1/approvals").json()["items"] == []
    refused = stranger.client.post(f"/v1/approvals/{approval}", json={"decision": "approve"})
    assert refused.status_code == 404
    decided = api.client.post(f"/v1/approvals/{approval}", json={"decision": "approve"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "approved" and decided.json()["decided_by"]
    assert finished(api, run_id)["status"] == "completed"
    assert [r["output"].strip() for r in results(api, run_id)] == ["approved"]
    again = api.client.post(f"/v1/approvals/{approval}", json={"decision": "deny"})
    assert again.status_code == 409
    trail = api.client.get("/v1/admin/audit", params={"action": "approval.decide"}).json()
    assert [(e["resource"], e["data"]["decision"]) for e in trail["items"]] == [
        (f"approval:{approval}", "approved")
    ]


def test_kill_9_while_a_tool_runs_completes_without_running_it_twice(
    stack: Stack, tool_model: Upstream, tmp_path: Path
) -> None:
    env = tools_env(tool_model)
    platform = stack.launch(env)
    api = Api(platform, stack.admin_key)
    session = api.session(agent(api, "slowcoder", ["python"]))
    code = (
        "import time\nopen('started', 'a').write('x')\ntime.sleep(8)\nopen('ended', 'a').write('x')"
    )
    run_id = api.send(session, call(("python", {"code": code}))).json()["run_id"]
    workspace = next((stack.tmp_path / "data" / "workspaces").glob(f"*/{session}"), None)
    deadline = time.monotonic() + 30
    while workspace is None or not (workspace / "started").exists():
        assert time.monotonic() < deadline, "the tool never started"
        time.sleep(0.1)
        workspace = next((stack.tmp_path / "data" / "workspaces").glob(f"*/{session}"), None)
    platform.process.send_signal(signal.SIGKILL)
    platform.process.wait(timeout=10)
    platform = stack.launch(env)
    api = Api(platform, stack.admin_key)
    run = finished(api, run_id, timeout=90)
    assert run["status"] == "completed", run
    (result,) = results(api, run_id)
    assert result["status"] == "error" and result["output"].startswith("interrupted")
    assert (workspace / "started").read_text() == "x", "the tool ran a second time"
    assert not (workspace / "ended").exists()


def test_escapes_are_contained_and_the_worker_stays_healthy(
    stack: Stack, tool_model: Upstream
) -> None:
    platform = stack.launch(tools_env(tool_model))
    api = Api(platform, stack.admin_key)
    session = api.session(agent(api, "probe", ["python", "http_fetch"]))
    key_file = str(stack.tmp_path / "data" / "admin.key")
    port = platform.base_url.rsplit(":", 1)[1]
    code = (
        "import os, socket\n"
        "out = []\n"
        f"for path in ('/etc/shadow', {key_file!r}):\n"
        "    try: open(path).read(); out.append('READ ' + path)\n"
        "    except Exception as e: out.append('refused ' + type(e).__name__)\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2); out.append('CONNECTED')\n"
        "except Exception as e: out.append('no network ' + type(e).__name__)\n"
        "out.append('env ' + str(sorted(k for k in os.environ if k.startswith('SOMA'))))\n"
        "print('\\n'.join(out))\n"
    )
    run_id = api.send(
        session,
        call(("python", {"code": code}), ("http_fetch", {"url": f"http://127.0.0.1:{port}/"})),
    ).json()["run_id"]
    run = finished(api, run_id, timeout=120)
    assert run["status"] == "completed", run
    python, fetch = results(api, run_id)
    assert "READ" not in python["output"] and "CONNECTED" not in python["output"], python
    assert "env []" in python["output"]
    assert fetch["status"] == "error" and "127.0.0.1" in fetch["output"]
    health = api.client.get("/v1/health").json()
    assert health["services"]["tools"]["status"] == "healthy", health["services"]["tools"]
    assert health["services"]["conversation"]["status"] == "healthy"


def _other_tenant_key(api: Api) -> str:
    tenant = api.client.post("/v1/admin/tenants", json={"name": f"other-{time.time_ns()}"})
    assert tenant.status_code == 201, tenant.text
    key = api.client.post(
        "/v1/admin/keys",
        json={"name": "stranger", "scopes": ["chat"], "tenant_id": tenant.json()["id"]},
    )
    assert key.status_code == 201, key.text
    return str(key.json()["key"])
