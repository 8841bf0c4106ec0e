"""The fast route of the message POST answers exactly as the FastAPI route does (both stacks).

A request with a `Content-Length` may take the fast route; the same request sent chunked always
goes through the FastAPI route, so each case is sent both ways and the answers compared.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.stacks import Api, Stack

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}
CASES: list[tuple[str, bytes, dict[str, str], dict[str, str]]] = [
    ("valid", b'{"content":"hi","metadata":{"a":[1,{"b":null}]}}', JSON, {}),
    ("charset", b'{"content":"hi"}', {"Content-Type": "application/json; charset=utf-8"}, {}),
    ("both flags", b'{"content":"hi"}', JSON, {"wait": "true", "stream": "true"}),
    ("flag not plain", b'{"content":"hi"}', JSON, {"wait": "maybe"}),
    ("bad json", b'{"content":', JSON, {}),
    ("empty body", b"", JSON, {}),
    ("not an object", b"[1]", JSON, {}),
    ("unknown field", b'{"content":"hi","x":1}', JSON, {}),
    ("wrong type", b'{"content":5}', JSON, {}),
    ("empty content", b'{"content":""}', JSON, {}),
    ("unknown upload", b'{"content":"hi","attachments":["nope"]}', JSON, {}),
    ("not json", b'{"content":"hi"}', {"Content-Type": "text/plain"}, {}),
    ("bad key", b'{"content":"hi"}', {**JSON, "Idempotency-Key": "a b"}, {}),
    ("no key", b'{"content":"hi"}', {**JSON, "Authorization": ""}, {}),
    ("unknown key", b'{"content":"hi"}', {**JSON, "Authorization": "Bearer soma_x_y"}, {}),
]


def _chunked(body: bytes) -> Iterator[bytes]:
    yield body


def _answer(response: httpx.Response) -> tuple[int, str, dict[str, Any] | str]:
    text = re.sub(r"[0-9a-f]{32}", "<id>", response.text)
    kind = response.headers.get("content-type", "")
    return response.status_code, kind, text if "json" not in kind else response.json()


def test_both_routes_answer_every_case_alike(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    session = api.session()
    url = f"/v1/sessions/{session}/messages"
    for name, body, headers, params in CASES:
        fast = api.client.post(url, content=body, headers=headers, params=params)
        framework = api.client.post(url, content=_chunked(body), headers=headers, params=params)
        assert "content-length" in fast.request.headers, name
        assert framework.request.headers.get("transfer-encoding") == "chunked", name
        if fast.status_code == 202:
            assert framework.status_code == 202, (name, framework.text)
            assert fast.json().keys() == framework.json().keys() == {"message_id", "run_id"}
            assert fast.headers["location"] == f"/v1/runs/{fast.json()['run_id']}"
            continue
        assert _answer(fast) == _answer(framework), name
        assert fast.status_code in (401, 404, 415, 422), (name, fast.text)
        assert fast.headers["content-type"] == "application/problem+json", name


def test_the_fast_route_keeps_scopes_idempotency_and_metrics(stack: Stack) -> None:
    platform = stack.launch()
    admin = Api(platform, stack.admin_key)
    session = admin.session()
    url = f"/v1/sessions/{session}/messages"
    keyed = {**JSON, "Idempotency-Key": "retry-1"}
    first = admin.client.post(url, content=b'{"content":"once"}', headers=keyed)
    again = admin.client.post(url, content=b'{"content":"once"}', headers=keyed)
    chunked = admin.client.post(url, content=_chunked(b'{"content":"once"}'), headers=keyed)
    assert first.status_code == again.status_code == chunked.status_code == 202
    assert first.json() == again.json() == chunked.json()
    history = admin.client.get(url).json()["items"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["once"]

    created = admin.client.post("/v1/admin/keys", json={"name": "ops", "scopes": ["admin"]})
    ops = Api(platform, created.json()["key"])
    refused = ops.client.post(url, content=b'{"content":"hi"}', headers=JSON)
    assert refused.status_code == 403, refused.text
    assert "'chat' scope" in refused.json()["detail"]

    waited = admin.client.post(
        url, content=b'{"content":"hi"}', headers=JSON, params={"wait": "true"}
    )
    assert waited.status_code == 200 and waited.json()["run"]["status"] == "completed"
    assert waited.json()["message"]["content"].startswith("You said")

    metrics = httpx.get(f"{platform.base_url}/metrics").text
    for status in ("200", "202", "403"):
        label = f'method="POST",route="/v1/sessions/{{session_id}}/messages",status="{status}"'
        assert f"soma_http_requests_total{{{label}}}" in metrics, status
