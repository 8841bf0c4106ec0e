"""EdgeMiddleware (body limit, error boundary, security headers) as a pure ASGI app, no server."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from soma.gateway.middleware import EdgeMiddleware
from soma.gateway.middleware.errors import exception_outline
from soma.gateway.middleware.security import headers_for_docs

LIMIT = 1_000
SECRET_INPUT = "user-typed-secret-4711"


def _scope(headers: list[tuple[bytes, bytes]], path: str = "/v1/x") -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


class Recorder:
    """An app that reads the whole body, then answers 200 with its length."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls = 0
        self.body = b""
        self.fail = fail
        self.after_disconnect = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.after_disconnect = True
                break
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.fail is not None:
            raise self.fail
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(self.body)})


async def _run(
    app: Any, scope: Scope, chunks: list[bytes], path_headers: Any = None
) -> tuple[list[Message], int]:
    sent: list[Message] = []
    pulled = 0

    async def receive() -> Message:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {
                "type": "http.request",
                "body": chunks[pulled - 1],
                "more_body": pulled < len(chunks),
            }
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    edge = EdgeMiddleware(app, max_body_bytes=LIMIT, path_headers=path_headers)
    await edge(scope, receive, send)
    return sent, pulled


def _headers(start: Message) -> dict[bytes, bytes]:
    return dict(start["headers"])


async def test_a_declared_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    app = Recorder()
    scope = _scope([(b"content-length", b"104857600")])
    sent, pulled = await _run(app, scope, [b"x" * 100])
    assert app.calls == 0 and pulled == 0
    start, body = sent
    assert start["status"] == 413
    headers = _headers(start)
    assert headers[b"content-type"] == b"application/problem+json"
    assert b"connection" not in headers  # the server drops the unread body, then closes
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert orjson.loads(body["body"])["status"] == 413


async def test_a_streamed_body_is_cut_off_as_soon_as_it_passes_the_limit() -> None:
    app = Recorder()
    chunks = [b"a" * 400] * 10
    sent, pulled = await _run(app, _scope([(b"transfer-encoding", b"chunked")]), chunks)
    assert pulled == 3  # 1,200 bytes > 1,000: nothing after the third chunk is read
    assert app.after_disconnect and len(app.body) == 800
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 413  # the app's own 200 afterwards was dropped


async def test_bodies_within_the_limit_pass_untouched() -> None:
    app = Recorder()
    chunks = [b"a" * 500, b"b" * 500]
    sent, _ = await _run(app, _scope([(b"transfer-encoding", b"chunked")]), chunks)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"1000"
    declared, _ = await _run(Recorder(), _scope([(b"content-length", b"1000")]), [b"c" * 1000])
    assert declared[0]["status"] == 200


async def test_an_unhandled_exception_is_a_bare_500_problem_and_a_log_without_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Recorder(fail=ValueError(f"cannot store {SECRET_INPUT}"))
    with caplog.at_level(logging.ERROR, logger="soma.http.errors"):
        sent, _ = await _run(app, _scope([(b"content-length", b"2")]), [b"{}"])
    start, body = sent
    assert start["status"] == 500
    problem = orjson.loads(body["body"])
    assert problem == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "the server could not answer this request",
    }
    (record,) = caplog.records
    assert record.exc_info is None
    assert record.__dict__["exc_type"] == "builtins.ValueError"
    assert SECRET_INPUT not in str(record.__dict__) and SECRET_INPUT not in record.getMessage()


async def test_docs_get_their_own_policy_and_other_paths_the_api_policy() -> None:
    app = Recorder()
    docs = {"/docs": headers_for_docs()}
    on_docs, _ = await _run(app, _scope([], path="/docs"), [b""], docs)
    on_api, _ = await _run(app, _scope([], path="/v1/x"), [b""], docs)
    docs_csp = [v for k, v in on_docs[0]["headers"] if k == b"content-security-policy"]
    api_csp = [v for k, v in on_api[0]["headers"] if k == b"content-security-policy"]
    assert len(docs_csp) == 1 and b"script-src 'self' https://cdn.jsdelivr.net" in docs_csp[0]
    assert api_csp == [b"default-src 'none'; frame-ancestors 'none'"]


def test_the_outline_of_a_chain_names_types_and_frames_only() -> None:
    try:
        try:
            raise KeyError(SECRET_INPUT)
        except KeyError as inner:
            raise RuntimeError(f"wrapped {SECRET_INPUT}") from inner
    except RuntimeError as exc:
        outline = exception_outline(exc)
    assert [link["type"] for link in outline["exc_chain"]] == [
        "builtins.RuntimeError",
        "builtins.KeyError",
    ]
    assert all(" in " in frame for link in outline["exc_chain"] for frame in link["frames"])
    assert SECRET_INPUT not in orjson.dumps(outline).decode()
