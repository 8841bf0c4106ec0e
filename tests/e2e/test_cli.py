"""The `soma` CLI against the real process: every command, `soma chat` through a
pseudo-terminal (streamed Markdown, a tool call approved inline, Ctrl-C cancelling a reply),
`soma runs tail` and `soma doctor`. The model is the scripted upstream (`--tools` mode: a
message `call [["NAME", {args}]]` calls tools), and a slow one for the reply that is stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pexpect
import pytest

from tests.e2e.platform import ROOT, Platform, launch
from tests.e2e.stacks import (
    FAST_RECOVERY,
    SLOW_CHUNKS,
    SLOW_DELAY_S,
    Upstream,
    model_env,
    start_upstream,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cli_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    upstreams = [
        start_upstream("--tools"),
        start_upstream("--chunks", str(SLOW_CHUNKS), "--delay", str(SLOW_DELAY_S)),
    ]
    env = model_env({"tooly": upstreams[0], "slowpoke": upstreams[1]}) | {
        "SOMA_LLM__DEFAULT_MODEL": "tooly"
    }
    platform = launch(tmp_path_factory.mktemp("cli"), env)
    try:
        platform.wait_healthy()
        yield platform
    finally:
        if platform.process.poll() is None:
            platform.terminate()
        for upstream in upstreams:
            upstream.process.terminate()
            upstream.process.wait(timeout=10)


def cli_env(platform: Platform, **extra: str) -> dict[str, str]:
    """The platform's own environment: the CLI finds its URL and admin key by itself."""
    return {**platform.env, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **extra}


def soma(platform: Platform, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "soma.cli", *args],
        cwd=platform.log_path.parent,
        env=env or cli_env(platform),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def soma_json(platform: Platform, *args: str) -> Any:
    code, output = soma(platform, "--json", *args)
    assert code == 0, output
    return json.loads(output)


def test_the_package_installs_the_soma_command() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["soma"] == "soma.cli.main:main"


def test_agents_sessions_keys_and_tenants_commands(cli_platform: Platform) -> None:
    created = soma_json(cli_platform, "agents", "create", "helper", "--instructions", "Be brief",
                        "--tool", "shell", "--approve", "shell")  # fmt: skip
    assert created["name"] == "helper" and created["require_approval"] == ["shell"]
    code, table = soma(cli_platform, "agents", "list")
    assert code == 0 and "helper" in table and "assistant" in table, table
    updated = soma_json(cli_platform, "agents", "update", "helper", "--memory", "--max-steps", "3")
    assert updated["memory"] is True and updated["max_steps"] == 3
    assert soma_json(cli_platform, "agents", "show", "helper")["instructions"] == "Be brief"

    session = soma_json(cli_platform, "sessions", "create", "--agent", "helper", "--title", "t1")
    assert session["agent_id"] == created["id"]
    listed = soma_json(cli_platform, "sessions", "list")
    assert session["id"] in [s["id"] for s in listed]
    assert soma_json(cli_platform, "sessions", "messages", session["id"]) == []
    code, output = soma(cli_platform, "sessions", "delete", session["id"])
    assert code == 0, output
    code, output = soma(cli_platform, "sessions", "delete", session["id"])
    assert code == 1 and "404" in output
    code, output = soma(cli_platform, "agents", "delete", "helper")
    assert code == 0, output

    tenant = soma_json(cli_platform, "tenants", "create", "acme")
    assert tenant["name"] == "acme"
    assert "acme" in [t["name"] for t in soma_json(cli_platform, "tenants", "list")]
    code, shown = soma(cli_platform, "keys", "create", "ci", "--scope", "chat",
                       "--tenant", tenant["id"])  # fmt: skip
    assert code == 0 and "shown once" in shown, shown
    key = soma_json(cli_platform, "keys", "create", "bot", "--scope", "chat")
    assert key["key"].startswith("soma_")
    # The new chat key works, through SOMA_API_KEY, and is not an admin key.
    as_bot = cli_env(cli_platform, SOMA_API_KEY=key["key"])
    code, output = soma(cli_platform, "agents", "list", env=as_bot)
    assert code == 0 and "assistant" in output
    code, output = soma(cli_platform, "keys", "list", env=as_bot)
    assert code == 1 and "403" in output
    assert key["id"] in [k["id"] for k in soma_json(cli_platform, "keys", "list")]
    code, output = soma(cli_platform, "keys", "revoke", key["id"])
    assert code == 0, output
    code, output = soma(cli_platform, "agents", "list", env=as_bot)
    assert code == 1 and "401" in output


def test_tools_approvals_runs_show_tail_and_cancel(cli_platform: Platform) -> None:
    catalog = soma_json(cli_platform, "tools", "list")
    assert "shell" in {t["name"] for t in catalog["items"]}
    soma_json(cli_platform, "agents", "create", "careful", "--tool", "shell", "--approve", "shell")
    session = soma_json(cli_platform, "sessions", "create", "--agent", "careful")["id"]
    api = cli_platform.base_url
    key = (cli_platform.log_path.parent / "data" / "admin.key").read_text().strip()
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}) as http:
        content = 'call [["shell", {"command": "echo from-cli"}]]'
        run = http.post(f"/v1/sessions/{session}/messages", json={"content": content}).json()
        pending: list[dict[str, Any]] = []
        for _ in range(200):
            pending = soma_json(cli_platform, "approvals", "list", "--status", "pending")
            if pending:
                break
        assert [p["run_id"] for p in pending] == [run["run_id"]]
        code, output = soma(cli_platform, "approvals", "approve", pending[0]["id"])
        assert code == 0 and "approved" in output, output
        code, tailed = soma(cli_platform, "runs", "tail", run["run_id"])
        assert code == 0, tailed
        assert "tool shell" in tailed and "from-cli" in tailed and "✓ done" in tailed
        code, lines = soma(cli_platform, "--json", "runs", "tail", run["run_id"])
        kinds = [json.loads(chunk)["event"] for chunk in split_json(lines)]
        assert kinds[0] == "run.queued" and kinds[-1] == "run.completed"
        assert "tool.approval_required" in kinds and "tool.result" in kinds
        after = [json.loads(c)["id"] for c in split_json(lines)][-2]
        resumed = split_json(soma(cli_platform, "--json", "runs", "tail", run["run_id"],
                                  "--after", str(after))[1])  # fmt: skip
        assert [json.loads(c)["event"] for c in resumed] == ["run.completed"]
        assert soma_json(cli_platform, "runs", "show", run["run_id"])["status"] == "completed"
        code, output = soma(cli_platform, "runs", "cancel", run["run_id"])
        assert code == 1 and "409" in output


def split_json(output: str) -> list[str]:
    """The documents of `--json runs tail` (one indented JSON document per event)."""
    decoder = json.JSONDecoder()
    chunks, index = [], 0
    while index < len(output.rstrip()):
        while output[index].isspace():
            index += 1
        _, end = decoder.raw_decode(output, index)
        chunks.append(output[index:end])
        index = end
    return chunks


def spawn_chat(platform: Platform, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable, ["-m", "soma.cli", "chat", *args], env=cli_env(platform),
        cwd=str(platform.log_path.parent), encoding="utf-8", timeout=60, dimensions=(40, 120),
    )  # fmt: skip
    child.expect("you> ")
    return child


def test_chat_in_a_terminal_streams_markdown_and_asks_for_approvals(
    cli_platform: Platform,
) -> None:
    soma_json(cli_platform, "agents", "create", "operator", "--tool", "shell",
              "--approve", "shell")  # fmt: skip
    chat = spawn_chat(cli_platform, "--agent", "operator")
    chat.sendline('call [["shell", {"command": "echo approved-inline"}]]')
    chat.expect(r"tool shell \{\"command\":\"echo approved-inline\"\}")
    chat.expect(r"approve shell .*\? \[y/N\]")
    chat.sendline("y")
    chat.expect("approved")
    chat.expect(r"shell ok in [0-9.]+ s: approved-inline")
    chat.expect("results: approved-inline")
    chat.expect("done")
    chat.expect("you> ")
    # A denied call: the model reads the refusal.
    chat.sendline('call [["shell", {"command": "echo never"}]]')
    chat.expect(r"\[y/N\]")
    chat.sendline("n")
    chat.expect("denied")
    chat.expect("you> ")
    # Markdown is rendered: the bold markers are gone, the text is bold (SGR 1).
    chat.sendline("this is **strong**")
    chat.expect(r"You said: this is \x1b\[1mstrong")
    chat.expect("you> ")
    chat.sendline("/quit")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0


def test_ctrl_c_in_chat_stops_the_reply_and_the_session_continues(
    cli_platform: Platform,
) -> None:
    soma_json(cli_platform, "agents", "create", "slow", "--model", "slowpoke")
    session = soma_json(cli_platform, "sessions", "create", "--agent", "slow")["id"]
    chat = spawn_chat(cli_platform, "--session", session)
    chat.sendline("a long answer please")
    chat.expect("You said")
    chat.sendintr()
    chat.expect("stopping the run")
    chat.expect("cancelled")
    chat.expect("you> ")
    chat.sendeof()
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0
    messages = soma_json(cli_platform, "sessions", "messages", session)
    runs = {m["run_id"] for m in messages if m["run_id"]}
    assert [soma_json(cli_platform, "runs", "show", r)["status"] for r in runs] == ["cancelled"]


def test_doctor_gives_every_backend_a_verdict(cli_platform: Platform) -> None:
    code, output = soma(cli_platform, "doctor")
    assert code == 0, output
    verdicts = {c["check"]: c for c in soma_json(cli_platform, "doctor")}
    names = ["config", "key", "server", "database", "bus", "cache", "policy", "models", "sandbox"]
    assert list(verdicts) == names
    assert all(c["verdict"] == "ok" for c in verdicts.values()), verdicts
    assert "sqlite" in verdicts["database"]["detail"] and "head" in verdicts["database"]["detail"]
    assert "tooly" in verdicts["models"]["detail"] and "reachable" in verdicts["models"]["detail"]
    assert verdicts["key"]["detail"].startswith("admin key from key file")
    # No server there: every backend line says so, and the exit code is not 0.
    code, output = soma(cli_platform, "--url", "http://127.0.0.1:9", "doctor")
    assert code == 1
    lines = output.splitlines()
    for name in ("server", "database", "bus", "cache", "policy", "models", "sandbox"):
        assert any(line.startswith(name) and "FAIL" in line for line in lines), output
    # A wrong key is named as such.
    env = cli_env(cli_platform, SOMA_API_KEY="soma_nope_nope")
    code, output = soma(cli_platform, "doctor", env=env)
    assert code == 1 and any(ln.startswith("key") and "401" in ln for ln in output.splitlines())


def test_no_key_and_no_server_are_clear_one_line_errors(
    cli_platform: Platform, tmp_path: Path
) -> None:
    bare = {k: v for k, v in cli_env(cli_platform).items() if k != "SOMA_DATA_DIR"}
    bare["SOMA_DATA_DIR"] = str(tmp_path)
    code, output = soma(cli_platform, "agents", "list", env=bare)
    assert code == 2 and "no API key" in output
    code, output = soma(cli_platform, "--url", "http://127.0.0.1:9", "--key", "k", "agents",
                        "list")  # fmt: skip
    assert code == 3 and "cannot reach http://127.0.0.1:9" in output


def test_memories_add_search_export_delete_and_forget(cli_platform: Platform) -> None:
    kept = soma_json(cli_platform, "memories", "add", "The user's cat is called Miso",
                     "--tag", "pets", "--user", "ann")  # fmt: skip
    assert kept["outcome"] == "stored" and kept["tags"] == ["pets"]
    soma_json(cli_platform, "memories", "add", "The user prefers green tea", "--user", "ann")
    soma_json(cli_platform, "memories", "add", "Bob likes trains", "--user", "bob")
    found = soma_json(cli_platform, "memories", "list", "--query", "cat", "--user", "ann",
                      "--limit", "1")  # fmt: skip
    assert [m["content"] for m in found] == ["The user's cat is called Miso"]
    code, table = soma(cli_platform, "memories", "list")
    assert code == 0 and "Miso" in table and "trains" in table, table
    code, exported = soma(cli_platform, "memories", "export", "--user", "ann")
    assert code == 0
    assert sorted(json.loads(line)["content"] for line in exported.splitlines()) == [
        "The user prefers green tea", "The user's cat is called Miso"]  # fmt: skip
    code, output = soma(cli_platform, "memories", "delete", kept["id"])
    assert code == 0, output
    left = soma_json(cli_platform, "memories", "list", "--user", "ann")
    assert [m["content"] for m in left] == ["The user prefers green tea"]
    assert soma_json(cli_platform, "memories", "forget", "--user", "ann") == {"deleted": 1}
    assert soma_json(cli_platform, "memories", "list", "--user", "ann") == []
    assert [m["content"] for m in soma_json(cli_platform, "memories", "list")] == [
        "Bob likes trains"]  # fmt: skip


def test_runs_tail_resumes_across_a_server_restart(
    upstreams: dict[str, Upstream], tmp_path: Path
) -> None:
    env = model_env(upstreams) | FAST_RECOVERY
    platform = launch(tmp_path, env)
    try:
        platform.wait_healthy()
        soma_json(platform, "agents", "create", "slow", "--model", "slow")
        session = soma_json(platform, "sessions", "create", "--agent", "slow")["id"]
        key = (tmp_path / "data" / "admin.key").read_text().strip()
        with httpx.Client(base_url=platform.base_url,
                          headers={"Authorization": f"Bearer {key}"}) as http:  # fmt: skip
            run = http.post(f"/v1/sessions/{session}/messages", json={"content": "keep going"})
        run_id = run.json()["run_id"]
        tail = subprocess.Popen(
            [sys.executable, "-m", "soma.cli", "--json", "runs", "tail", run_id],
            cwd=tmp_path, env=cli_env(platform), stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert tail.stdout is not None
        seen: list[str] = []
        while '"message.delta"' not in (line := tail.stdout.readline()):
            assert line, "the tail ended before the first delta"
            seen.append(line)
        seen.append(line)
        # The server dies mid-reply and comes back on the same port and data.
        platform.process.kill()
        platform.process.wait()
        port = platform.base_url.rsplit(":", 1)[1]
        again = launch(tmp_path, {**env, "SOMA_HTTP__PORT": port})
        again.base_url = platform.base_url
        platform = again
        # (Not communicate(): it would skip what readline() has buffered. The tail gives up by
        # itself when no event comes for a while, so this read ends.)
        rest = tail.stdout.read()
        tail.wait(timeout=30)
        assert tail.returncode == 0, rest
        events = [json.loads(chunk) for chunk in split_json("".join(seen) + rest)]
        assert events[-1]["event"] == "run.completed"
        # Resumed after the last event seen: nothing twice, the second attempt to the end.
        ids = [e["id"] for e in events]
        assert ids == sorted(set(ids))
        restarted = [e["data"] for e in events if e["event"] == "run.started"]
        assert restarted == [{"attempt": 1}, {"attempt": 2}]
    finally:
        if platform.process.poll() is None:
            platform.terminate()
