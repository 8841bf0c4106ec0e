"""The two deployment shapes for e2e tests, plus the scripted upstream models they call.

`embedded`: SQLite, in-process bus and cache. `distributed`: PostgreSQL, a Kafka-protocol
broker and Redis from the harness. Both run the real `python -m orchestrator.main`.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.platform import ROOT, Platform, free_port, launch
from tests.harness.postgres import create_database, drop_database

FAST_CHUNKS = 3
SLOW_CHUNKS = 40
SLOW_DELAY_S = 0.15


@dataclass
class Upstream:
    process: subprocess.Popen[str]
    base_url: str


def start_upstream(*args: str) -> Upstream:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.scripted_llm", "--port", str(port), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError(f"scripted upstream did not start: {line!r}")
    return Upstream(process, line.split()[1])


@pytest.fixture(scope="session")
def upstreams() -> Iterator[dict[str, Upstream]]:
    """`fast` echoes in 3 chunks at once; `slow` takes ~6 s (for cancel and shutdown tests)."""
    started = {
        "fast": start_upstream("--chunks", str(FAST_CHUNKS)),
        "slow": start_upstream("--chunks", str(SLOW_CHUNKS), "--delay", str(SLOW_DELAY_S)),
    }
    yield started
    for upstream in started.values():
        upstream.process.terminate()
        upstream.process.wait(timeout=10)


@dataclass
class Stack:
    """Everything needed to (re)launch one platform on one set of backends."""

    name: str
    tmp_path: Path
    env: dict[str, str]
    platforms: list[Platform] = field(default_factory=list)

    def launch(self, extra_env: dict[str, str] | None = None) -> Platform:
        platform = launch(self.tmp_path, {**self.env, **(extra_env or {})})
        self.platforms.append(platform)
        platform.wait_healthy()
        return platform

    @property
    def admin_key(self) -> str:
        return (self.tmp_path / "data" / "admin.key").read_text().strip()


def model_env(upstreams: dict[str, Upstream]) -> dict[str, str]:
    env = {"SOMA_LLM__DEFAULT_MODEL": "fast"}
    for name, upstream in upstreams.items():
        prefix = f"SOMA_LLM__MODELS__{name.upper()}__"
        env[prefix + "PROVIDER"] = "openai"
        env[prefix + "BASE_URL"] = upstream.base_url
        env[prefix + "MODEL"] = f"scripted-{name}"
        env[prefix + "TIMEOUT_S"] = "10"
    return env


FAST_RECOVERY = {
    "SOMA_RUNTIME__LEASE_S": "3",
    "SOMA_RUNTIME__RECOVERY_INTERVAL_S": "0.5",
    "SOMA_RUNTIME__REQUEUE_AFTER_S": "10",
    "SOMA_RUNTIME__DRAIN_TIMEOUT_S": "1",
    "SOMA_RUNTIME__SSE_HEARTBEAT_S": "2",
    "SOMA_OUTBOX__POLL_INTERVAL_S": "0.2",
    "SOMA_OBSERVABILITY__ACCESS_LOG": "false",
}


@pytest.fixture(params=["embedded", "distributed"])
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, upstreams: dict[str, Upstream]
) -> Iterator[Stack]:
    env = {**model_env(upstreams), **FAST_RECOVERY}
    cleanup = None
    if request.param == "distributed":
        server_url: str = request.getfixturevalue("postgres_url")
        database_url = create_database(server_url, with_vector=True)
        cleanup = (server_url, database_url)
        env.update(
            {
                "SOMA_DATABASE__URL": database_url,
                "SOMA_CACHE__URL": request.getfixturevalue("redis_url"),
                "SOMA_BUS__BACKEND": "kafka",
                "SOMA_BUS__KAFKA__BOOTSTRAP_SERVERS": request.getfixturevalue("kafka_bootstrap"),
                "SOMA_BUS__KAFKA__TOPIC_PREFIX": f"e{uuid.uuid4().hex[:10]}.",
                "SOMA_BUS__KAFKA__PARTITIONS": "3",
                "SOMA_BUS__KAFKA__SESSION_TIMEOUT_MS": "1000",
                "SOMA_BUS__KAFKA__HEARTBEAT_INTERVAL_MS": "200",
                "SOMA_BUS__KAFKA__REBALANCE_TIMEOUT_MS": "1000",
                "SOMA_BUS__KAFKA__IDEMPOTENT_PRODUCER": "false",
                "SOMA_BUS__KAFKA__FETCH_MAX_WAIT_MS": "20",
            }
        )
    built = Stack(request.param, tmp_path, env)
    yield built
    for platform in built.platforms:
        if platform.process.poll() is None:
            platform.process.kill()
            platform.process.wait()
    if cleanup is not None:
        drop_database(*cleanup)


@pytest.fixture
def embedded(tmp_path: Path, upstreams: dict[str, Upstream]) -> Iterator[Stack]:
    """The embedded stack alone, for tests whose subject does not depend on the backends."""
    built = Stack("embedded", tmp_path, {**model_env(upstreams), **FAST_RECOVERY})
    yield built
    for platform in built.platforms:
        if platform.process.poll() is None:
            platform.process.kill()
            platform.process.wait()


class Api:
    """A small synchronous client of one platform with one key."""

    def __init__(self, platform: Platform, key: str) -> None:
        self.client = httpx.Client(
            base_url=platform.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def session(self, agent: str | None = None) -> str:
        body = {"agent": agent} if agent else {}
        response = self.client.post("/v1/sessions", json=body)
        assert response.status_code == 201, response.text
        session_id: str = response.json()["id"]
        return session_id

    def send(self, session_id: str, content: str, **params: str) -> httpx.Response:
        return self.client.post(
            f"/v1/sessions/{session_id}/messages", json={"content": content}, params=params
        )

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_run(self, run_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in statuses:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s")
            time.sleep(0.05)

    def messages(self, session_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
            page = self.client.get(f"/v1/sessions/{session_id}/messages", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            items.extend(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                return items


def read_sse(response: httpx.Response, stop_after: int | None = None) -> list[dict[str, Any]]:
    """Parse an SSE body into `{id, event, data}` dicts; stop at a terminal event."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "event" in current:
                current["data"] = orjson.loads(current.get("data", "{}"))
                events.append(current)
                if current["event"] in ("run.completed", "run.failed", "run.cancelled"):
                    return events
                if stop_after is not None and len(events) >= stop_after:
                    return events
            current = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        if name == "id":
            current["id"] = int(value)
        elif name in ("event", "data"):
            current[name] = value
    return events
