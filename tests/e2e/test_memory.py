"""Long-term memory end to end, on the embedded and the distributed stack: a fact told in one
session is in the prompt of the same user's next session, never in another user's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stacks import Api, Stack, start_upstream

pytestmark = pytest.mark.e2e
FACT = "My favourite colour is green and I live in Lyon."


def _prompts(recording: Path) -> list[str]:
    """The system prompt of every chat request the upstream received, in order."""
    bodies = [json.loads(line) for line in recording.read_text().splitlines()]
    return [
        "".join(m["content"] for m in body["messages"] if m["role"] == "system") for body in bodies
    ]


def _chat(api: Api, user: str, content: str) -> dict[str, Any]:
    created = api.client.post("/v1/sessions", json={"agent": "keeper", "user": user})
    assert created.status_code == 201, created.text
    answered = api.send(created.json()["id"], content, wait="true")
    assert answered.status_code == 200, answered.text
    body: dict[str, Any] = answered.json()
    assert body["run"]["status"] == "completed", body
    return body


def test_a_fact_told_once_is_recalled_in_the_users_next_session(
    stack: Stack, tmp_path: Path
) -> None:
    recording = tmp_path / "upstream.jsonl"
    upstream = start_upstream("--record", str(recording))
    try:
        prefix = "SOMA_LLM__MODELS__RECORDER__"
        platform = stack.launch(
            {prefix + "PROVIDER": "openai", prefix + "BASE_URL": upstream.base_url,
             prefix + "MODEL": "recorder", prefix + "TIMEOUT_S": "10"}
        )  # fmt: skip
        health = platform.wait_healthy().json()["services"]
        assert health["memory"]["status"] == "healthy", health
        assert health["memory_pipeline"]["status"] == "healthy", health
        api = Api(platform, stack.admin_key)
        agent = {"name": "keeper", "model": "recorder", "memory": True, "recall_k": 3}
        assert api.client.post("/v1/agents", json=agent).status_code == 201
        _chat(api, "alice", FACT)
        deadline = time.monotonic() + 30
        params = {"agent": "keeper", "user": "alice"}
        while not api.client.get("/v1/memories", params=params).json()["items"]:
            assert time.monotonic() < deadline, "the pipeline kept nothing"
            time.sleep(0.1)
        _chat(api, "alice", "Where do I live?")
        assert FACT in _prompts(recording)[-1]
        _chat(api, "bob", "Where do I live?")
        assert FACT not in _prompts(recording)[-1]
        found = api.client.get("/v1/memories", params={**params, "query": "home town"})
        assert [m["content"] for m in found.json()["items"]] == [FACT]
        # Memory writes and deletes are audited: the pipeline's as `system`, the API's by key.
        (kept,) = found.json()["items"]
        assert api.client.delete(f"/v1/memories/{kept['id']}").status_code == 204
        trail = api.client.get("/v1/admin/audit", params={"limit": "200"}).json()["items"]
        writes = [e for e in trail if e["action"] == "memory.write"]
        assert (
            writes
            and writes[0]["actor"] == "system"
            and kept["id"] in writes[0]["data"]["memories"]
        )
        deletes = [e for e in trail if e["action"] == "memory.delete"]
        assert [(e["resource"], e["actor"][:4]) for e in deletes] == [
            (f"memory:{kept['id']}", "key:")
        ]
    finally:
        upstream.process.terminate()
        upstream.process.wait(timeout=10)
