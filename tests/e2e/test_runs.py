"""Durable agent runs end to end, on the embedded and on the distributed stack (issue: runs)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.platform import ROOT, Platform
from tests.e2e.stacks import FAST_RECOVERY, Api, Stack, Upstream, model_env, read_sse

pytestmark = pytest.mark.e2e

LOAD_SESSIONS = 50
LOAD_PER_SESSION = 4


def slow_agent(api: Api, name: str = "slowpoke", concurrency: str = "enqueue") -> str:
    response = api.client.post(
        "/v1/agents",
        json={
            "name": name,
            "instructions": "Be slow.",
            "model": "slow",
            "concurrency": concurrency,
        },
    )
    assert response.status_code == 201, response.text
    return name


def test_message_streams_deltas_then_completes(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    session = api.session()
    with api.client.stream(
        "POST", f"/v1/sessions/{session}/messages", params={"stream": "true"},
        json={"content": "hello there"},
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_sse(response)
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["run.queued", "run.started"]
    assert kinds[-2:] == ["message.completed", "run.completed"]
    deltas = [e["data"]["text"] for e in events if e["event"] == "message.delta"]
    assert len(deltas) == 3
    assert "".join(deltas) == "You said: hello there"
    assert events[-2]["data"]["message"]["content"] == "You said: hello there"
    assert events[-1]["data"]["usage"]["completion_tokens"] > 0
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))
    run_id = response.headers["x-run-id"]
    assert api.run(run_id)["status"] == "completed"
    roles = [(m["role"], m["content"]) for m in api.messages(session)]
    assert roles == [("user", "hello there"), ("assistant", "You said: hello there")]


async def _send_all(
    platform: Platform, key: str, sessions: list[str], answered: list[int] | None = None
) -> list[dict[str, Any]]:
    """POST every message concurrently; return what each POST answered (202s carry ids).

    `answered[0]` counts the POSTs answered so far, for callers that act mid-load.
    """
    answered = answered if answered is not None else [0]
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(
        base_url=platform.base_url, headers={"Authorization": f"Bearer {key}"},
        timeout=30, limits=limits,
    ) as client:  # fmt: skip

        async def one(session: str, index: int) -> dict[str, Any]:
            content = f"message {index} of {session}"
            try:
                response = await client.post(
                    f"/v1/sessions/{session}/messages", json={"content": content}
                )
            except httpx.TransportError:
                return {"session": session, "content": content, "status": None}
            answered[0] += 1
            body = response.json() if response.status_code == 202 else {}
            return {"session": session, "content": content, "status": response.status_code,
                    **body}  # fmt: skip

        async def session_batch(session: str) -> list[dict[str, Any]]:
            # In order within a session (that order must be kept), concurrent across sessions.
            return [await one(session, i) for i in range(LOAD_PER_SESSION)]

        batches = await asyncio.gather(*(session_batch(s) for s in sessions))
    return [result for batch in batches for result in batch]


def wait_answered(api: Api, accepted: list[dict[str, Any]], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    pending = {a["run_id"] for a in accepted}
    while pending:
        for run_id in list(pending):
            if api.run(run_id)["status"] in ("completed", "failed", "cancelled"):
                pending.discard(run_id)
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"{len(pending)} runs not finished after {timeout}s")
        time.sleep(0.2)


def assert_exactly_once_in_order(api: Api, accepted: list[dict[str, Any]]) -> None:
    by_session: dict[str, list[dict[str, Any]]] = {}
    for item in accepted:
        by_session.setdefault(item["session"], []).append(item)
    for session, sent in by_session.items():
        messages = api.messages(session)
        replies = [m for m in messages if m["role"] == "assistant"]
        per_run = Counter(m["run_id"] for m in replies)
        assert all(count == 1 for count in per_run.values()), per_run
        questions = {m["run_id"]: m for m in messages if m["role"] == "user"}
        for item in sent:
            assert per_run[item["run_id"]] == 1, f"run {item['run_id']} has no single reply"
            reply = next(m for m in replies if m["run_id"] == item["run_id"])
            assert reply["content"] == f"You said: {questions[item['run_id']]['content']}"
        # Runs of a session execute one at a time in arrival order.
        asked = [m["run_id"] for m in messages if m["role"] == "user"]
        answered = [m["run_id"] for m in sorted(replies, key=lambda m: m["seq"])]
        assert answered == [run for run in asked if run in per_run]


def test_concurrent_messages_answered_once_in_session_order(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    sessions = [api.session() for _ in range(LOAD_SESSIONS)]
    results = asyncio.run(_send_all(platform, stack.admin_key, sessions))
    assert Counter(r["status"] for r in results) == {202: LOAD_SESSIONS * LOAD_PER_SESSION}
    wait_answered(api, results)
    statuses = Counter(api.run(r["run_id"])["status"] for r in results)
    assert statuses == {"completed": LOAD_SESSIONS * LOAD_PER_SESSION}
    assert_exactly_once_in_order(api, results)


def test_kill_9_mid_load_loses_and_duplicates_nothing(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    sessions = [api.session() for _ in range(LOAD_SESSIONS)]

    async def load_then_kill() -> list[dict[str, Any]]:
        answered = [0]
        sending = asyncio.create_task(_send_all(platform, stack.admin_key, sessions, answered))
        async with asyncio.timeout(30):
            while answered[0] < 80:
                await asyncio.sleep(0.005)
        platform.process.send_signal(signal.SIGKILL)
        return await sending

    results = asyncio.run(load_then_kill())
    platform.process.wait(timeout=10)
    accepted = [r for r in results if r["status"] == 202]
    assert accepted, "nothing was accepted before the kill"
    restarted = stack.launch()
    api = Api(restarted, stack.admin_key)
    wait_answered(api, accepted)
    statuses = Counter(api.run(r["run_id"])["status"] for r in accepted)
    assert statuses == {"completed": len(accepted)}
    assert_exactly_once_in_order(api, accepted)


def test_sigterm_mid_run_exits_0_and_run_completes_after_restart(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    session = api.session(slow_agent(api))
    accepted = api.send(session, "take your time")
    assert accepted.status_code == 202, accepted.text
    run_id = accepted.json()["run_id"]
    api.wait_run(run_id, {"running"})
    platform.process.send_signal(signal.SIGTERM)
    # While it drains (the slow run holds it up to drain_timeout_s), new work is refused.
    deadline = time.monotonic() + 5
    during = api.send(session, "too late")
    while during.status_code == 202 and time.monotonic() < deadline:
        during = api.send(session, "too late")  # the signal may not have landed yet
    assert during.status_code == 503, during.text
    assert during.headers["retry-after"] == "5"
    assert during.headers["content-type"] == "application/problem+json"
    assert platform.process.wait(timeout=30) == 0
    restarted = stack.launch()
    api = Api(restarted, stack.admin_key)
    run = api.wait_run(run_id, {"completed", "failed", "cancelled"}, timeout=90)
    assert run["status"] == "completed", run
    assert run["attempt"] == 2
    replies = [m for m in api.messages(session) if m["role"] == "assistant"]
    mine = [m["content"] for m in replies if m["run_id"] == run_id]
    assert mine == ["You said: take your time"]


def test_cancel_stops_a_running_run(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    session = api.session(slow_agent(api))
    run_id = api.send(session, "never mind").json()["run_id"]
    api.wait_run(run_id, {"running"})
    cancelled = api.client.post(f"/v1/runs/{run_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    run = api.wait_run(run_id, {"cancelled", "completed", "failed"}, timeout=10)
    assert run["status"] == "cancelled"
    with api.client.stream("GET", f"/v1/runs/{run_id}/events") as response:
        events = read_sse(response)
    terminal = [e for e in events if e["event"].startswith("run.") and e["event"] != "run.queued"]
    assert [e["event"] for e in terminal] == ["run.started", "run.cancelled"]
    assert [m["role"] for m in api.messages(session)] == ["user"]
    again = api.client.post(f"/v1/runs/{run_id}/cancel")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


def test_cancel_of_a_queued_run_is_immediate(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    session = api.session(slow_agent(api))
    first = api.send(session, "first").json()["run_id"]
    second = api.send(session, "second").json()["run_id"]
    response = api.client.post(f"/v1/runs/{second}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    api.client.post(f"/v1/runs/{first}/cancel")
    api.wait_run(first, {"cancelled"}, timeout=10)
    assert api.run(second)["status"] == "cancelled"


def test_sse_resume_with_last_event_id_loses_and_repeats_nothing(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    session = api.session(slow_agent(api))
    run_id = api.send(session, "stream me").json()["run_id"]
    with api.client.stream("GET", f"/v1/runs/{run_id}/events") as response:
        first = read_sse(response, stop_after=6)
    assert len(first) == 6
    resume = {"Last-Event-ID": str(first[-1]["id"])}
    with api.client.stream("GET", f"/v1/runs/{run_id}/events", headers=resume) as response:
        rest = read_sse(response)
    events = first + rest
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids)), "an event was repeated or came out of order"
    assert [e["event"] for e in events].count("run.completed") == 1
    text = "".join(e["data"]["text"] for e in events if e["event"] == "message.delta")
    assert text == "You said: stream me"
    completed = next(e for e in events if e["event"] == "message.completed")
    assert completed["data"]["message"]["content"] == text


def test_reject_concurrency_answers_409_while_a_run_is_active(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    session = api.session(slow_agent(api, "strict", concurrency="reject"))
    first = api.send(session, "one")
    assert first.status_code == 202
    second = api.send(session, "two")
    assert second.status_code == 409
    assert second.headers["content-type"] == "application/problem+json"
    assert [m["content"] for m in api.messages(session)] == ["one"]
    api.client.post(f"/v1/runs/{first.json()['run_id']}/cancel")
    api.wait_run(first.json()["run_id"], {"cancelled"}, timeout=10)
    assert api.send(session, "three").status_code == 202


def test_wait_true_returns_the_finished_run_and_reply(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    session = api.session()
    response = api.send(session, "ping", wait="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["run"]["status"] == "completed"
    assert body["message"]["content"] == "You said: ping"


def test_policy_deny_answers_403_with_the_reason_and_writes_nothing(stack: Stack) -> None:
    # The shipped policy plus one rule: conversation.send is denied for long messages.
    shipped = (ROOT / "soma" / "policy" / "rego" / "soma.rego").read_text()
    allow = '} else := {"allow": true, "require_approval": false, "reason": "allowed"}'
    assert allow in shipped
    limited = shipped.replace(
        allow,
        '} else := _deny("message too long") if {\n'
        '\tinput.action == "conversation.send"\n'
        "\tinput.context.content_chars > 20\n" + allow,
    )
    rego_dir = stack.tmp_path / "rego"
    rego_dir.mkdir()
    (rego_dir / "soma.rego").write_text(limited)
    platform = stack.launch({"SOMA_POLICY__REGO_DIR": str(rego_dir)})
    api = Api(platform, stack.admin_key)
    session = api.session()
    denied = api.send(session, "this message is far too long for the policy")
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    assert "message too long" in denied.json()["detail"]
    assert api.messages(session) == []
    assert api.send(session, "short", wait="true").status_code == 200


def test_a_second_signal_forces_the_exit(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    env = {**model_env(upstreams), **FAST_RECOVERY, "SOMA_RUNTIME__DRAIN_TIMEOUT_S": "30"}
    stack = Stack("embedded", tmp_path, env)
    platform = stack.launch()
    try:
        api = Api(platform, stack.admin_key)
        session = api.session(slow_agent(api))
        run_id = api.send(session, "hold the drain open").json()["run_id"]
        api.wait_run(run_id, {"running"})
        platform.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while api.client.get("/v1/health/ready").status_code != 503:
            assert time.monotonic() < deadline, "readiness never went 503"
            time.sleep(0.02)
        platform.process.send_signal(signal.SIGTERM)
        assert platform.process.wait(timeout=5) == 128 + signal.SIGTERM
    finally:
        if platform.process.poll() is None:
            platform.process.kill()
