"""A drain ends waiting and streaming requests cleanly; a keyed retry is never a duplicate.

Issue 10, findings 7 and 8, on both stacks: SIGTERM while a client waits with `?wait=true`
answers the 202 body (the message was accepted) within the shutdown timeout; the client's
retry with the same `Idempotency-Key` after the restart returns the same run; a stream cut by
the drain ends with a comment saying where to resume; a client that drops its stream leaves
no error in the log.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.stacks import Api, Stack
from tests.e2e.test_runs import slow_agent

pytestmark = pytest.mark.e2e


def test_sigterm_during_wait_answers_202_and_a_keyed_retry_is_the_same_run(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    session = api.session(slow_agent(api))
    answer: dict[str, Any] = {}

    def wait_for_reply() -> None:
        response = api.client.post(
            f"/v1/sessions/{session}/messages",
            params={"wait": "true"},
            json={"content": "take your time"},
            headers={"Idempotency-Key": "order-42"},
            timeout=60,
        )
        answer.update(status=response.status_code, body=response.json(), at=time.monotonic())

    waiting = threading.Thread(target=wait_for_reply)
    waiting.start()
    deadline = time.monotonic() + 20
    while not [m for m in api.messages(session) if m["role"] == "user"]:
        assert time.monotonic() < deadline, "the message was never accepted"
        time.sleep(0.05)
    time.sleep(0.5)  # the run is under way on the slow model
    signalled = time.monotonic()
    platform.process.send_signal(signal.SIGTERM)
    waiting.join(timeout=30)
    assert platform.process.wait(timeout=30) == 0
    assert answer["status"] == 202, answer
    assert answer["at"] - signalled < 15, "the waiting client was held through the drain"
    run_id = answer["body"]["run_id"]

    restarted = stack.launch()
    api = Api(restarted, stack.admin_key)
    retry = api.client.post(
        f"/v1/sessions/{session}/messages",
        json={"content": "take your time"},
        headers={"Idempotency-Key": "order-42"},
    )
    assert retry.status_code == 202, retry.text
    assert retry.json() == answer["body"]
    assert api.wait_run(run_id, {"completed", "failed"}, timeout=60)["status"] == "completed"
    roles = [(m["role"], m["run_id"]) for m in api.messages(session)]
    assert roles == [("user", run_id), ("assistant", run_id)]
    # The same key with another message is refused, and changes nothing.
    other = api.client.post(
        f"/v1/sessions/{session}/messages",
        json={"content": "something else"},
        headers={"Idempotency-Key": "order-42"},
    )
    assert other.status_code == 409, other.text
    assert other.headers["content-type"].startswith("application/problem+json")
    assert len(api.messages(session)) == 2


def test_a_drain_ends_a_stream_with_where_to_resume_and_a_dropped_stream_logs_nothing(
    stack: Stack,
) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    session = api.session(slow_agent(api))
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    # A client that goes away mid-stream: a normal disconnect, not an error.
    with httpx.Client(base_url=platform.base_url, headers=headers, timeout=30) as client:
        path = f"/v1/sessions/{session}/messages"
        with client.stream("POST", path, params={"stream": "true"}, json={"content": "a"}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("event: message.delta"):
                    break
    time.sleep(0.5)
    # A stream open when the drain begins ends with a comment naming where to resume.
    lines: list[str] = []
    path = f"/v1/sessions/{session}/messages"
    with (
        httpx.Client(base_url=platform.base_url, headers=headers, timeout=30) as client,
        client.stream("POST", path, params={"stream": "true"}, json={"content": "b"}) as r,
    ):
        run_id = r.headers["x-run-id"]
        signalled = False
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith("event: run.queued") and not signalled:
                platform.process.send_signal(signal.SIGTERM)
                signalled = True
    assert platform.process.wait(timeout=30) == 0
    comments = [line for line in lines if line.startswith(":") and "shutting down" in line]
    assert comments == [
        f": the server is shutting down; resume with GET /v1/runs/{run_id}/events and Last-Event-ID"
    ], lines[-5:]
    logs = platform.logs()
    assert "Traceback" not in logs
    assert '"level":"ERROR"' not in logs
