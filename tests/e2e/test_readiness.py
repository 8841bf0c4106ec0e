"""Readiness tells the truth: `/v1/health/ready` is 200 exactly when the gateway accepts work."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
import pytest

from tests.e2e.platform import launch
from tests.e2e.stacks import Api, Stack
from tests.e2e.test_runs import LOAD_SESSIONS, _send_all, wait_answered

pytestmark = pytest.mark.e2e

PROBE_ROUNDS_AFTER_READY = 20
STARTUP_LIMIT_S = 120


def _observe_restart(stack: Stack, sessions: list[str]) -> list[tuple[str, httpx.Response]]:
    """Restart the platform and alternate a readiness probe and a message POST from the moment
    it listens until it has been ready for a while; every answer, in the order received."""
    platform = launch(stack.tmp_path, stack.env)
    stack.platforms.append(platform)
    observed: list[tuple[str, httpx.Response]] = []
    ready_rounds = 0
    deadline = time.monotonic() + STARTUP_LIMIT_S
    with httpx.Client(
        base_url=platform.base_url,
        headers={"Authorization": f"Bearer {stack.admin_key}"},
        timeout=30,
    ) as client:
        index = 0
        while ready_rounds < PROBE_ROUNDS_AFTER_READY:
            assert time.monotonic() < deadline, f"never ready:\n{platform.logs()}"
            assert platform.process.poll() is None, platform.logs()
            try:
                ready = client.get("/v1/health/ready")
                observed.append(("ready", ready))
                session = sessions[index % len(sessions)]
                index += 1
                sent = client.post(
                    f"/v1/sessions/{session}/messages", json={"content": f"probe {index}"}
                )
                observed.append(("post", sent))
            except httpx.TransportError:
                time.sleep(0.01)  # not listening yet
                continue
            if ready.status_code == 200:
                ready_rounds += 1
    return observed


def test_ready_is_200_exactly_when_messages_are_accepted_after_kill_9(stack: Stack) -> None:
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

    before = [r for r in asyncio.run(load_then_kill()) if r["status"] == 202]
    platform.process.wait(timeout=10)
    observed = _observe_restart(stack, sessions)

    accepting = [
        (kind, r.status_code) for kind, r in observed if (kind, r.status_code) in
        (("ready", 200), ("post", 202))
    ]  # fmt: skip
    assert accepting, "the restarted platform never accepted"
    first = next(i for i, (kind, r) in enumerate(observed) if (kind, r.status_code) in
                 (("ready", 200), ("post", 202)))  # fmt: skip
    # Before the first sign of accepting, everything refused; from then on, nothing did.
    for kind, response in observed[:first]:
        assert response.status_code == 503, (kind, response.status_code, response.text)
        if kind == "post":
            assert response.headers["content-type"] == "application/problem+json"
            assert int(response.headers["retry-after"]) >= 1
    after = [(kind, r.status_code) for kind, r in observed[first:]]
    assert all(status in (200, 202) for _, status in after), after

    # Work accepted before the crash and while probing is answered exactly once.
    api = Api(stack.platforms[-1], stack.admin_key)
    probes = [
        {"run_id": r.json()["run_id"]} for kind, r in observed
        if kind == "post" and r.status_code == 202
    ]  # fmt: skip
    wait_answered(api, [*before, *probes])
    statuses = {api.run(item["run_id"])["status"] for item in [*before, *probes]}
    assert statuses == {"completed"}
