"""The OpenAPI document tells the truth: checked by hand, then by schemathesis (issue 10, #12-13).

Both run against the real `python -m orchestrator.main` on the embedded stack.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from soma.gateway.auth.keys import parse_prefix
from tests.e2e.platform import ROOT, Platform, launch
from tests.e2e.stacks import FAST_RECOVERY, Upstream, model_env

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
OPENAI_DOORS = ("/v1/models", "/v1/chat/completions", "/v1/responses")
FUZZ_SECONDS = 40
"""Per key; schemathesis repeats fuzzing and stateful phases until this budget is spent."""
HERE = Path(__file__).resolve().parent


def _start(tmp_path: Path, upstreams: dict[str, Upstream], **env: str) -> Platform:
    platform = launch(tmp_path, {**model_env(upstreams), **FAST_RECOVERY, **env})
    platform.wait_healthy()
    return platform


@pytest.fixture
def platform(tmp_path: Path, upstreams: dict[str, Upstream]) -> Iterator[Platform]:
    started = _start(tmp_path, upstreams)
    yield started
    if started.process.poll() is None:
        started.process.kill()
        started.process.wait()


def _admin_key(platform: Platform) -> str:
    return Path(platform.env["SOMA_DATA_DIR"], "admin.key").read_text().strip()


def _client(platform: Platform, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=platform.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _key_ids(admin: httpx.Client) -> dict[str, str]:
    listed = admin.get("/v1/admin/keys", params={"limit": 200})
    assert listed.status_code == 200, listed.text
    return {item["prefix"]: item["id"] for item in listed.json()["items"]}


def _issue_chat_key(admin: httpx.Client) -> str:
    issued = admin.post("/v1/admin/keys", json={"name": "fuzz-chat", "scopes": ["chat"]})
    assert issued.status_code == 201, issued.text
    key: str = issued.json()["key"]
    return key


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def test_every_error_is_documented_as_problem_json(platform: Platform) -> None:
    document = httpx.get(f"{platform.base_url}/openapi.json").json()
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"title", "status", "detail"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    gateway_operations = 0
    for path, method, operation in _operations(document):
        responses = operation["responses"]
        # The OpenAI doors answer in OpenAI's error shape, which their clients parse.
        openai_door = path.startswith(OPENAI_DOORS)
        media, schema = (
            ("application/json", "/OpenAIError") if openai_door else (PROBLEM, "/Problem")
        )
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                # The edge answers these before any route: problem+json on every path.
                edge = status in ("408", "413", "431")
                want, ref = (PROBLEM, "/Problem") if edge else (media, schema)
                assert set(response["content"]) == {want}, (method, path, status)
                assert response["content"][want]["schema"]["$ref"].endswith(ref)
        assert {"408", "431"} <= set(responses), (method, path)  # the server's own answers
        if path.startswith(("/v1/health", "/.well-known/")):  # open to anyone
            continue
        gateway_operations += 1
        for status in ("400", "401", "403", "413", "503") + (() if openai_door else ("422",)):
            assert status in responses, (method, path, status)
        if "{" in path:
            assert "404" in responses, (method, path)
    assert gateway_operations >= 15


def test_null_is_accepted_exactly_where_the_schema_allows_it(platform: Platform) -> None:
    document = httpx.get(f"{platform.base_url}/openapi.json").json()
    update = document["components"]["schemas"]["AgentUpdate"]["properties"]
    nullable = {
        name for name, schema in update.items() if {"type": "null"} in schema.get("anyOf", [])
    }
    # null puts the platform's default back; a name has none.
    assert nullable == {"model", "recall_k", "recall_budget_tokens"}
    with _client(platform, _admin_key(platform)) as admin:
        created = admin.post(
            "/v1/agents", json={"name": "nulls", "model": "slow", "recall_k": 3}
        ).json()
        assert created["model"] == "slow" and created["recall_k"] == 3
        reset = admin.patch(f"/v1/agents/{created['id']}", json={"model": None, "recall_k": None})
        refused = admin.patch(f"/v1/agents/{created['id']}", json={"name": None})
        after = admin.get(f"/v1/agents/{created['id']}").json()
    assert reset.status_code == 200, reset.text
    assert reset.json()["model"] == "fast"  # llm.default_model of this stack
    assert reset.json()["recall_k"] is None
    assert refused.status_code == 422 and refused.headers["content-type"] == PROBLEM
    assert after["name"] == "nulls"


def test_405_lists_every_allowed_method(platform: Platform) -> None:
    with _client(platform, _admin_key(platform)) as admin:
        on_item = admin.put("/v1/agents/any-id")
        on_list = admin.delete("/v1/sessions")
    assert on_item.status_code == 405 and on_item.headers["content-type"] == PROBLEM
    assert on_item.headers["allow"] == "DELETE, GET, PATCH"
    assert on_list.status_code == 405
    assert on_list.headers["allow"] == "GET, POST"


def test_a_bogus_cursor_answers_400_on_every_list(platform: Platform) -> None:
    document = httpx.get(f"{platform.base_url}/openapi.json").json()
    with _client(platform, _admin_key(platform)) as admin:
        session_id = admin.post("/v1/sessions", json={}).json()["id"]
        for index in range(3):
            admin.post("/v1/sessions", json={"title": f"s{index}"})
        first = admin.get("/v1/sessions", params={"limit": 1}).json()
        lists = [
            path.replace("{session_id}", session_id)
            for path, method, operation in _operations(document)
            if method == "get"
            and any(p["name"] == "cursor" for p in operation.get("parameters", []))
        ]
        answers = {path: admin.get(path, params={"cursor": "bogus"}) for path in lists}
        foreign = admin.get("/v1/agents", params={"cursor": first["next_cursor"]})
        honest = admin.get("/v1/sessions", params={"limit": 1, "cursor": first["next_cursor"]})
    assert len(lists) >= 5
    for path, response in answers.items():
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"] == PROBLEM
    assert foreign.status_code == 400  # another list's cursor
    assert honest.status_code == 200 and len(honest.json()["items"]) == 1


def test_docs_are_pinned_and_can_be_turned_off(
    platform: Platform, tmp_path: Path, upstreams: dict[str, Upstream]
) -> None:
    page = httpx.get(f"{platform.base_url}/docs")
    init = httpx.get(f"{platform.base_url}/docs/init.js")
    api = httpx.get(f"{platform.base_url}/v1/health")
    assert page.status_code == 200 and init.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self' https://cdn.jsdelivr.net;" in csp and "unsafe" not in csp
    assert page.text.count('integrity="sha384-') == 2 and "<script>" not in page.text
    assert "/openapi.json" in init.text
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    for response in (page, init, api):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "server" not in response.headers
    (tmp_path / "nodocs").mkdir()
    closed = _start(tmp_path / "nodocs", upstreams, SOMA_HTTP__DOCS="false")
    try:
        assert httpx.get(f"{closed.base_url}/docs").status_code == 404
        assert httpx.get(f"{closed.base_url}/openapi.json").status_code == 404
        assert httpx.get(f"{closed.base_url}/v1/health").status_code == 200
    finally:
        closed.process.kill()
        closed.process.wait()


def _checks_run(label: str, phase: str) -> set[str]:
    """The checks schemathesis runs on one operation in one phase, under the test's config."""
    import schemathesis.specs.openapi.checks  # noqa: F401  (registers the OpenAPI checks)
    from schemathesis.checks import CheckContext
    from schemathesis.config import SchemathesisConfig

    project = SchemathesisConfig.from_path(HERE / "schemathesis.toml").projects.get({})
    method, path = label.split(" ", 1)
    operation = SimpleNamespace(label=label, method=method, path=path, tags=None,
                                operation_id=None, definition=SimpleNamespace(raw={}))  # fmt: skip
    config = project.checks_config_for(operation=operation, phase=phase)  # type: ignore[arg-type]
    context = CheckContext(None, None, None, config, None, response_checks=None)
    return {check.__name__ for check in context.internals.checks}


def test_the_fuzz_config_turns_off_only_what_it_says() -> None:
    # Once a check was chosen on the command line, a per-operation `enabled = false` lost.
    everywhere = _checks_run("GET /v1/sessions", "stateful")
    assert {"negative_data_rejection", "not_a_server_error", "status_code_conformance",
            "response_schema_conformance", "use_after_free"} <= everywhere  # fmt: skip
    assert not {"positive_data_acceptance", "object_level_authorization"} & everywhere
    assert _checks_run("POST /v1/uploads", "stateful") == everywhere - {"negative_data_rejection"}
    for phase in ("coverage", "fuzzing"):
        assert _checks_run("POST /v1/uploads", phase) == everywhere


def _fuzz(platform: Platform, key: str, protected: list[str], report: Path) -> str:
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
        "FUZZ_PROTECTED_KEY_IDS": ",".join(protected),
        "FUZZ_BASE_URL": platform.base_url,
        "FUZZ_KEY": key,
        "PYTHONPATH": str(ROOT),
    }
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{platform.base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--max-time",
        str(FUZZ_SECONDS),
        # One worker: hypothesis' lambda introspection is not thread-safe on CPython 3.11.
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-shrink",
        "--seed",
        "20261203",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=FUZZ_SECONDS * 4
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-20_000:]
    return output


def test_schemathesis_finds_no_5xx_and_no_contradiction(platform: Platform, tmp_path: Path) -> None:
    admin_key = _admin_key(platform)
    with _client(platform, admin_key) as admin:
        chat_key = _issue_chat_key(admin)
        ids = _key_ids(admin)
    protected = [ids[str(parse_prefix(key))] for key in (admin_key, chat_key)]
    outputs = [
        _fuzz(platform, key, protected, tmp_path / f"{name}.xml")
        for name, key in (("admin", admin_key), ("chat", chat_key))
    ]
    for output in outputs:
        assert "Tested: " in output  # it reached the operations
    for key in (admin_key, chat_key):
        with _client(platform, key) as client:
            assert client.get("/v1/sessions").status_code == 200  # never revoked
    assert '"logger":"soma.http.errors"' not in platform.logs()
