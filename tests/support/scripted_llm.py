"""A real OpenAI-compatible HTTP server whose replies tests script (ARCHITECTURE §15).

In tests::

    with ScriptedLLM() as llm:
        llm.script(Text("Hello there", chunks=3), HttpError(500), model="gpt")
        ... point a provider at llm.base_url ...
        assert llm.requests[0].body["messages"][-1]["content"] == "hi"

As a process (next to the real orchestrator in e2e tests)::

    python -m tests.support.scripted_llm --port 9000 --reply "Hello from upstream"

prints `READY http://127.0.0.1:9000/v1` on stdout once it accepts connections, then serves
until SIGTERM/SIGINT. Without `--reply` it answers `You said: <last user message>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass(frozen=True)
class Text:
    """A text reply streamed in `chunks` pieces, `delay_s` apart; `fail_after` drops the
    connection after that many content chunks (a broken upstream mid-stream)."""

    text: str
    chunks: int = 3
    delay_s: float = 0.0
    fail_after: int | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class ToolCalls:
    """Tool calls `(name, arguments)`; arguments stream as `fragments` pieces each."""

    calls: Sequence[tuple[str, dict[str, Any] | str]]
    text: str = ""
    fragments: int = 3
    delay_s: float = 0.0


@dataclass(frozen=True)
class HttpError:
    status: int
    retry_after: float | None = None
    message: str = "scripted failure"


@dataclass(frozen=True)
class Hang:
    """Accept the request and answer nothing for `seconds` (a stuck upstream)."""

    seconds: float = 600.0


@dataclass(frozen=True)
class Instant:
    """One pre-encoded chunk, no delay: the cheapest possible upstream, for benchmarks."""

    text: str = "ok"


Reply = Text | ToolCalls | HttpError | Hang | Instant


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def last_user_content(self) -> str:
        for message in reversed(self.body.get("messages", [])):
            if message.get("role") == "user":
                return str(message.get("content") or "")
        return ""


Responder = Callable[[RecordedRequest], Reply]


EMBEDDING_DIM = 64


def bag_of_words(text: str) -> list[float]:
    """A deterministic stand-in embedding: word counts hashed into `EMBEDDING_DIM` buckets."""
    vector = [0.0] * EMBEDDING_DIM
    for word in text.lower().replace(".", " ").replace("?", " ").split():
        vector[zlib.crc32(word.encode()) % EMBEDDING_DIM] += 1.0
    return vector


def echo(request: RecordedRequest) -> Reply:
    return Text(f"You said: {request.last_user_content}", chunks=3)


def _split(text: str, pieces: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    queues: dict[str, deque[Reply]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    finished_streams: int = 0
    abandoned_streams: int = 0


class ScriptedLLM:
    """The server, its script and the log of what it received."""

    def __init__(self, port: int = 0, responder: Responder = echo) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port: int = self._socket.getsockname()[1]
        self.responder = responder
        self._state = _State()
        self._closing = threading.Event()
        self._instant: dict[tuple[str, bool], bytes] = {}
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedLLM:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("scripted LLM server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._closing.set()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, *replies: Reply, model: str = "*") -> None:
        """Queue replies for requests naming `model` (`*`: any model without its own queue)."""
        with self._state.lock:
            self._state.queues.setdefault(model, deque()).extend(replies)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def finished_streams(self) -> int:
        """Streams sent to the end (`[DONE]`)."""
        with self._state.lock:
            return self._state.finished_streams

    @property
    def abandoned_streams(self) -> int:
        """Streams that stopped early: the client went away or a scripted failure."""
        with self._state.lock:
            return self._state.abandoned_streams

    def chat_requests(self, model: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path.endswith("/chat/completions") and (model is None or r.model == model)
        ]

    def _record(self, request: Request, body: dict[str, Any]) -> RecordedRequest:
        recorded = RecordedRequest(request.method, request.url.path, dict(request.headers), body)
        with self._state.lock:
            self._state.requests.append(recorded)
        return recorded

    def _next_reply(self, recorded: RecordedRequest) -> Reply:
        with self._state.lock:
            for key in (recorded.model, "*"):
                queue = self._state.queues.get(key)
                if queue:
                    return queue.popleft()
        return self.responder(recorded)

    async def _models(self, request: Request) -> Response:
        self._record(request, {})
        with self._state.lock:
            names = sorted(k for k in self._state.queues if k != "*")
        data = [{"id": n, "object": "model", "owned_by": "scripted"} for n in [*names, "scripted"]]
        return JSONResponse({"object": "list", "data": data})

    async def _embeddings(self, request: Request) -> Response:
        """Bag-of-words vectors (hashed words): texts sharing words come out similar."""
        body = json.loads(await request.body() or b"{}")
        self._record(request, body)
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return JSONResponse({"error": {"message": "input must be strings"}}, 400)
        data = [
            {"object": "embedding", "index": i, "embedding": bag_of_words(text)}
            for i, text in enumerate(texts)
        ]
        return JSONResponse({"object": "list", "data": data, "model": body.get("model")})

    async def _chat(self, request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        recorded = self._record(request, body)
        reply = self._next_reply(recorded)
        stream = bool(body.get("stream"))
        if isinstance(reply, Instant):
            return self._instant_reply(reply, recorded, stream)
        if isinstance(reply, HttpError):
            headers = {} if reply.retry_after is None else {"Retry-After": f"{reply.retry_after:g}"}
            error = {"error": {"message": reply.message, "type": "scripted", "code": reply.status}}
            return JSONResponse(error, status_code=reply.status, headers=headers)
        if isinstance(reply, Hang):
            await self._hang(reply.seconds)
            return JSONResponse({"error": {"message": "hang ended"}}, status_code=504)
        if stream:
            return StreamingResponse(self._tracked(reply, recorded), media_type="text/event-stream")
        return JSONResponse(self._whole(reply, recorded))

    async def _hang(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._closing.is_set():
            await asyncio.sleep(0.05)

    def _usage(self, recorded: RecordedRequest, completion: int) -> dict[str, int]:
        prompt = sum(len(str(m.get("content") or "").split()) for m in recorded.body["messages"])
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _frame(self, recorded: RecordedRequest, delta: dict[str, Any], finish: str | None) -> bytes:
        return _sse(
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion.chunk",
                "model": recorded.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    async def _tracked(
        self, reply: Text | ToolCalls, recorded: RecordedRequest
    ) -> AsyncIterator[bytes]:
        finished = False
        try:
            async for frame in self._events(reply, recorded):
                yield frame
            finished = True
        finally:
            with self._state.lock:
                if finished:
                    self._state.finished_streams += 1
                else:
                    self._state.abandoned_streams += 1

    async def _events(
        self, reply: Text | ToolCalls, recorded: RecordedRequest
    ) -> AsyncIterator[bytes]:
        yield self._frame(recorded, {"role": "assistant", "content": ""}, None)
        produced = 0
        if isinstance(reply, Text):
            for piece in _split(reply.text, reply.chunks):
                if reply.fail_after is not None and produced >= reply.fail_after:
                    raise ConnectionAbortedError("scripted mid-stream failure")
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                produced += 1
                yield self._frame(recorded, {"content": piece}, None)
            finish = reply.finish_reason
        else:
            if reply.text:
                produced += 1
                yield self._frame(recorded, {"content": reply.text}, None)
            for index, (name, arguments) in enumerate(reply.calls):
                head = {"index": index, "id": f"call_{index}", "type": "function"}
                head["function"] = {"name": name, "arguments": ""}
                yield self._frame(recorded, {"tool_calls": [head]}, None)
                text = arguments if isinstance(arguments, str) else json.dumps(arguments)
                for piece in _split(text, reply.fragments):
                    if reply.delay_s:
                        await asyncio.sleep(reply.delay_s)
                    produced += 1
                    part = {"index": index, "function": {"arguments": piece}}
                    yield self._frame(recorded, {"tool_calls": [part]}, None)
            finish = "tool_calls"
        yield self._frame(recorded, {}, finish)
        if (recorded.body.get("stream_options") or {}).get("include_usage"):
            usage = self._usage(recorded, produced)
            yield _sse({"id": "chatcmpl-scripted", "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    def _whole(self, reply: Text | ToolCalls, recorded: RecordedRequest) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        finish = "stop"
        completion = len(reply.text.split())
        if isinstance(reply, ToolCalls):
            finish = "tool_calls"
            message["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
                for i, (name, args) in enumerate(reply.calls)
            ]
        return {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "model": recorded.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": self._usage(recorded, completion),
        }

    def _instant_reply(self, reply: Instant, recorded: RecordedRequest, stream: bool) -> Response:
        key = (reply.text, stream)
        payload = self._instant.get(key)
        if payload is None:
            if stream:
                payload = b"".join(
                    [
                        self._frame(recorded, {"role": "assistant", "content": reply.text}, None),
                        self._frame(recorded, {}, "stop"),
                        _sse(
                            {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
                        ),
                        b"data: [DONE]\n\n",
                    ]
                )
            else:
                payload = json.dumps(self._whole(Text(reply.text), recorded)).encode()
            self._instant[key] = payload
        media = "text/event-stream" if stream else "application/json"
        return Response(payload, media_type=media)


def tool_directive(request: RecordedRequest) -> Reply | None:
    """The `--tools` script: calls asked for in the last user message, then the results."""
    messages = request.body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        results = [m.get("content", "") for m in messages if m.get("role") == "tool"]
        return Text("results: " + " | ".join(results), chunks=1)
    content = str(last.get("content") or "")
    if last.get("role") != "user" or not content.startswith("call "):
        return None
    calls = [(str(name), args) for name, args in json.loads(content[len("call ") :])]
    return ToolCalls(calls, fragments=1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible server for tests")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply", help="answer every chat with this text (default: echo)")
    parser.add_argument("--chunks", type=int, default=3, help="stream replies in this many chunks")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--instant", action="store_true", help="pre-encoded replies (benchmarks)")
    parser.add_argument(
        "--tools",
        action="store_true",
        help='a user message `call [["NAME", {json args}], ...]` makes the model call those '
        "tools; once their results are in, it answers `results: ...`",
    )
    parser.add_argument(
        "--record", help="append every request body to this file, one JSON object per line"
    )
    args = parser.parse_args(argv)

    def responder(request: RecordedRequest) -> Reply:
        if args.record:
            with open(args.record, "a") as recording:
                recording.write(json.dumps(request.body) + "\n")
        if args.tools:
            planned = tool_directive(request)
            if planned is not None:
                return planned
        if args.instant:
            return Instant(args.reply or "ok")
        text = args.reply if args.reply is not None else f"You said: {request.last_user_content}"
        return Text(text, chunks=args.chunks, delay_s=args.delay)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = ScriptedLLM(port=args.port, responder=responder).start()
    print(f"READY {server.base_url}", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
