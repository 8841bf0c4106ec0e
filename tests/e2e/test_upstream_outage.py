"""The model upstream goes down under load and comes back (issue 10, finding 3), both stacks.

The upstream is a real process (the scripted OpenAI-compatible server) stopped with SIGTERM
(it stops accepting, finishes what it streams) and restarted on the same port.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.platform import ROOT, Platform, free_port
from tests.e2e.stacks import Api, Stack
from tests.e2e.test_runs import assert_exactly_once_in_order, wait_answered

pytestmark = pytest.mark.e2e

SESSIONS = 30
PER_SESSION = 10
SEND_GAP_S = 2.5
"""Between two messages of one session: 10 messages span the whole outage and after it."""
DOWN_AFTER_S = 3.0
OUTAGE_S = 20.0


class FlakyUpstream:
    """The scripted upstream as a process on a fixed port, to stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.scripted_llm", "--port", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("READY "):
            process.kill()
            raise RuntimeError(f"scripted upstream did not start: {line!r}")
        self.process = process

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        self.process = None


@pytest.fixture
def flaky() -> Iterator[FlakyUpstream]:
    upstream = FlakyUpstream()
    upstream.start()
    yield upstream
    upstream.stop()


def outage_env(upstream: FlakyUpstream, window_s: float) -> dict[str, str]:
    prefix = "SOMA_LLM__MODELS__FLAKY__"
    return {
        prefix + "PROVIDER": "openai",
        prefix + "BASE_URL": upstream.base_url,
        prefix + "MODEL": "scripted-flaky",
        prefix + "TIMEOUT_S": "10",
        "SOMA_LLM__DEFAULT_MODEL": "flaky",
        "SOMA_LLM__RETRY_WINDOW_S": str(window_s),
    }


def metric(platform: Platform, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    text = httpx.get(f"{platform.base_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def _send_spread(platform: Platform, key: str, sessions: list[str]) -> list[dict[str, Any]]:
    """Each session sends PER_SESSION messages SEND_GAP_S apart; sessions run concurrently."""
    async with httpx.AsyncClient(
        base_url=platform.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:

        async def session_messages(session: str) -> list[dict[str, Any]]:
            sent = []
            for index in range(PER_SESSION):
                content = f"message {index} of {session}"
                response = await _post_retrying(client, session, content, f"m{index}")
                body = response.json() if response.status_code == 202 else {}
                sent.append({"session": session, "status": response.status_code, **body})
                await asyncio.sleep(SEND_GAP_S)
            return sent

        batches = await asyncio.gather(*(session_messages(s) for s in sessions))
    return [item for batch in batches for item in batch]


async def _post_retrying(
    client: httpx.AsyncClient, session: str, content: str, key: str
) -> httpx.Response:
    """As a careful client does: a POST cut on the wire (a keep-alive connection the server
    closed as it was reused) is sent again with the same Idempotency-Key, never duplicated."""
    for attempt in range(3):
        try:
            return await client.post(
                f"/v1/sessions/{session}/messages",
                json={"content": content},
                headers={"Idempotency-Key": key},
            )
        except httpx.TransportError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def llm_health(api: Api) -> dict[str, Any]:
    body: dict[str, Any] = api.client.get("/v1/health").json()
    llm: dict[str, Any] = body["services"]["llm"]
    return llm


def test_an_upstream_outage_under_load_fails_no_accepted_message(
    stack: Stack, flaky: FlakyUpstream
) -> None:
    platform = stack.launch(outage_env(flaky, window_s=120))
    api = Api(platform, stack.admin_key)
    sessions = [api.session() for _ in range(SESSIONS)]
    observed: dict[str, Any] = {}

    async def load_with_outage() -> list[dict[str, Any]]:
        sending = asyncio.create_task(_send_spread(platform, stack.admin_key, sessions))
        await asyncio.sleep(DOWN_AFTER_S)
        await asyncio.to_thread(flaky.stop)
        down_at = time.monotonic()
        # While it is down: the llm service says so, naming the model, and calls wait.
        while time.monotonic() - down_at < OUTAGE_S:
            llm = await asyncio.to_thread(llm_health, api)
            if "circuit open (requests wait): flaky" in llm["detail"]:
                observed.setdefault("degraded", llm)
            await asyncio.sleep(0.5)
        observed["waiting"] = metric(platform, "soma_llm_waiting_requests", model="flaky")
        await asyncio.to_thread(flaky.start)
        return await sending

    results = asyncio.run(load_with_outage())
    accepted = [r for r in results if r["status"] == 202]
    assert accepted, Counter(r["status"] for r in results)
    wait_answered(api, accepted, timeout=180)
    statuses = Counter(api.run(r["run_id"])["status"] for r in accepted)
    assert statuses == {"completed": len(accepted)}, statuses
    assert_exactly_once_in_order(api, accepted)
    # The outage really held runs up: they waited for the model instead of failing.
    assert "degraded" in observed, "health never reported the open circuit"
    assert observed["degraded"]["status"] == "degraded"
    assert observed["waiting"] > 0
    assert metric(platform, "soma_llm_retry_waits_total", model="flaky") > 0
    assert metric(platform, "soma_llm_breaker_probes_total", model="flaky", result="ok") >= 1
    # Once the upstream is back the circuit closes and health recovers.
    deadline = time.monotonic() + 30
    while llm_health(api)["status"] != "healthy":
        assert time.monotonic() < deadline, llm_health(api)
        time.sleep(0.2)


def test_an_outage_longer_than_the_window_fails_runs_with_a_clear_error(
    stack: Stack, flaky: FlakyUpstream
) -> None:
    platform = stack.launch(outage_env(flaky, window_s=3))
    api = Api(platform, stack.admin_key)
    sessions = [api.session() for _ in range(3)]
    flaky.stop()
    run_ids = []
    for session in sessions:
        response = api.send(session, "is anyone there?")
        assert response.status_code == 202, response.text
        run_ids.append(response.json()["run_id"])
    for run_id in run_ids:
        run = api.wait_run(run_id, {"completed", "failed", "cancelled"}, timeout=60)
        assert run["status"] == "failed", run
        assert run["error"].startswith("the model upstream is unavailable"), run["error"]
        assert "127.0.0.1" not in run["error"]
    assert metric(platform, "soma_llm_retry_window_exhausted_total", model="flaky") == 3
    flaky.start()
    deadline = time.monotonic() + 30
    while True:
        response = api.send(sessions[0], "back again?", wait="true")
        if response.status_code == 200 and response.json()["run"]["status"] == "completed":
            break
        assert time.monotonic() < deadline, response.text
        time.sleep(0.5)
    assert response.json()["message"]["content"] == "You said: back again?"
