"""Which message POSTs the fast route serves itself, and that it hands the rest on intact."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.responses import Response

from soma.gateway.auth.principal import Principal
from soma.gateway.fast_message import FastMessages, plain

BODY = b'{"content":"hi"}'


def scope(query: bytes = b"", **headers: str) -> dict[str, Any]:
    given = {name.replace("_", "-"): value for name, value in headers.items()}
    fields = {"content-type": "application/json", "content-length": str(len(BODY)), **given}
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/sessions/s1/messages",
        "path_params": {"session_id": "s1"},
        "query_string": query,
        "headers": [(name.encode(), value.encode()) for name, value in fields.items()],
    }


def test_plain_requests_and_their_flags() -> None:
    found = plain(scope())
    assert found is not None and (found.wait, found.stream, found.idempotency_key) == (
        False, False, None,
    )  # fmt: skip
    found = plain(scope(b"wait=true&stream=false", idempotency_key="k-1"))
    assert found is not None and (found.wait, found.stream, found.idempotency_key) == (
        True, False, "k-1",
    )  # fmt: skip
    found = plain(scope(b"stream=true", content_type="Application/JSON; charset=utf-8"))
    assert found is not None and found.stream


@pytest.mark.parametrize(
    "request_scope",
    [
        scope(b"wait=True"),  # FastAPI reads it as true: its route decides
        scope(b"wait=1"),
        scope(b"wait"),
        scope(b"wait=true&wait=false"),
        scope(b"limit=5"),
        scope(content_type="text/plain"),
        scope(content_type="application/merge-patch+json"),
        scope(transfer_encoding="chunked"),
        scope(idempotency_key="a b"),
        scope(idempotency_key=""),
        scope(idempotency_key="x" * 201),
    ],
)
def test_anything_else_is_left_to_the_fastapi_route(request_scope: dict[str, Any]) -> None:
    assert plain(request_scope) is None


def test_two_content_types_or_keys_are_not_plain() -> None:
    doubled = scope()
    doubled["headers"] += [(b"content-type", b"application/json")]
    assert plain(doubled) is None
    keyed = scope(idempotency_key="a")
    keyed["headers"] += [(b"idempotency-key", b"b")]
    assert plain(keyed) is None
    no_length = scope()
    no_length["headers"] = [h for h in no_length["headers"] if h[0] != b"content-length"]
    assert plain(no_length) is None


class Recorder:
    def __init__(self) -> None:
        self.posts: list[tuple[str, str, dict[str, Any]]] = []
        self.fallbacks: list[bytes] = []
        self.sent: list[dict[str, Any]] = []

    async def gate(self, request: Any) -> Principal:
        return Principal(tenant_id="t", key_id="k", scopes=frozenset({"chat"}))

    async def post(
        self, principal: Principal, session_id: str, body: Any, **flags: Any
    ) -> Response:
        self.posts.append((principal.tenant_id, session_id, {"content": body.content, **flags}))
        return Response(b"{}", 202)

    async def fallback(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        self.fallbacks.append(message["body"])

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def serve(recorder: Recorder, request_scope: dict[str, Any], body: bytes) -> None:
    app = FastMessages(recorder.gate, recorder.post, recorder.fallback)  # type: ignore[arg-type]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    await app(request_scope, receive, recorder.send)


async def test_a_plain_valid_request_never_reaches_the_fallback() -> None:
    recorder = Recorder()
    await serve(recorder, scope(b"wait=true", idempotency_key="k"), BODY)
    assert recorder.posts == [
        ("t", "s1", {"content": "hi", "wait": True, "stream": False, "idempotency_key": "k"})
    ]
    assert recorder.fallbacks == [] and recorder.sent[0]["status"] == 202


async def test_an_invalid_body_reaches_the_fallback_whole() -> None:
    recorder = Recorder()
    for body in (b'{"content":5}', b'{"content":', b"", b'{"content":"hi","x":1}'):
        await serve(recorder, scope(), body)
    assert recorder.fallbacks == [b'{"content":5}', b'{"content":', b"", b'{"content":"hi","x":1}']
    await serve(recorder, scope(content_type="text/plain"), BODY)  # not plain: body unread
    assert recorder.fallbacks[-1] == BODY
    assert recorder.posts == [] and recorder.sent == []
