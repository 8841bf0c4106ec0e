"""One entry point, several processes: API replicas sharing a port and a separate worker.

On the distributed stack (the processes share PostgreSQL, the broker and Redis): two API
processes serve one port (`http.reuse_port`), a worker process runs the turns; the worker is
killed with SIGKILL under load and started again. Every accepted message is answered exactly
once, in session order, and 2,000 accepted messages all complete.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.platform import Platform, free_port, launch
from tests.e2e.stacks import Api, Stack
from tests.e2e.test_runs import assert_exactly_once_in_order, wait_answered

pytestmark = pytest.mark.e2e

SESSIONS = 100
PER_SESSION = 20
KILL_AFTER_ANSWERS = 300


def start(stack: Stack, tmp: Path, **env: str) -> Platform:
    tmp.mkdir(parents=True, exist_ok=True)
    platform = launch(tmp, {**stack.env, **env})
    if "SOMA_HTTP__PORT" in env:  # a port chosen here (shared), not by `launch`
        platform.base_url = f"http://127.0.0.1:{env['SOMA_HTTP__PORT']}"
    stack.platforms.append(platform)
    platform.wait_healthy(timeout=90)
    return platform


async def send_all(
    base_url: str, key: str, sessions: list[str], progress: list[int]
) -> list[dict[str, Any]]:
    """Every message of every session, in order within a session, concurrent across them."""
    limits = httpx.Limits(max_connections=64)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60, limits=limits
    ) as client:

        async def session_batch(session: str) -> list[dict[str, Any]]:
            sent = []
            for index in range(PER_SESSION):
                content = f"message {index} of {session}"
                path = f"/v1/sessions/{session}/messages"
                response = await client.post(path, json={"content": content})
                progress[0] += 1
                body = response.json() if response.status_code == 202 else {}
                status = response.status_code
                sent.append({"session": session, "content": content, "status": status, **body})
            return sent

        batches = await asyncio.gather(*(session_batch(s) for s in sessions))
    return [item for batch in batches for item in batch]


@pytest.mark.parametrize("stack", ["distributed"], indirect=True)
def test_api_replicas_on_one_port_and_a_killed_worker_lose_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    api_env = {
        "SOMA_SERVICES": "gateway",
        "SOMA_HTTP__PORT": str(free_port()),
        "SOMA_HTTP__REUSE_PORT": "true",
        "SOMA_OBSERVABILITY__ACCESS_LOG": "true",
    }
    first = start(stack, tmp_path / "api-1", **api_env)
    second = start(stack, tmp_path / "api-2", **api_env)
    worker_env = {"SOMA_SERVICES": "conversation,recovery", "SOMA_HTTP__PORT": str(free_port())}
    worker = start(stack, tmp_path / "worker", **worker_env)
    key = (tmp_path / "api-1" / "data" / "admin.key").read_text().strip()
    api = Api(first, key)
    sessions = [api.session() for _ in range(SESSIONS)]

    async def load_then_kill_worker() -> list[dict[str, Any]]:
        progress = [0]
        sending = asyncio.create_task(send_all(first.base_url, key, sessions, progress))
        async with asyncio.timeout(60):
            while progress[0] < KILL_AFTER_ANSWERS:
                await asyncio.sleep(0.005)
        worker.process.send_signal(signal.SIGKILL)
        return await sending

    results = asyncio.run(load_then_kill_worker())
    worker.process.wait(timeout=10)
    # The API processes kept accepting while no worker ran.
    assert Counter(r["status"] for r in results) == {202: SESSIONS * PER_SESSION}
    start(stack, tmp_path / "worker-again", **worker_env)
    wait_answered(api, results, timeout=300)
    statuses = Counter(api.run(r["run_id"])["status"] for r in results)
    assert statuses == {"completed": SESSIONS * PER_SESSION}
    assert_exactly_once_in_order(api, results)
    # Both API processes took a share of the messages on the one port.
    served = [p.logs().count('"msg":"POST /v1/sessions/') for p in (first, second)]
    assert all(count > 0 for count in served), served
