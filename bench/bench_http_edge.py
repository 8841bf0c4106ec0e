"""CPU cost the HTTP edge adds per request: EdgeMiddleware (ASGI) and EdgeProtocol (server).

    .venv/bin/python bench/bench_http_edge.py [--requests 200000]

Both are measured against the same stack without them, in one process, no network: the ASGI
layer by calling the app directly, the protocol by feeding keep-alive requests to it through
a stand-in transport and letting the event loop run each request's task to completion.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
import uvloop
from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from orchestrator.http_protocol import EdgeLimits, edge_protocol
from soma.gateway.middleware import EdgeMiddleware

ROUNDS = 5
HEADERS = [
    (b"host", b"127.0.0.1:8080"),
    (b"authorization", b"Bearer soma_abcdefghijkl_" + b"x" * 43),
    (b"content-type", b"application/json"),
    (b"content-length", b"21"),
    (b"user-agent", b"bench"),
]
REQUEST = (
    b"POST /v1/sessions/s/messages HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Authorization: Bearer soma_abcdefghijkl_" + b"x" * 43 + b"\r\n"
    b"Content-Type: application/json\r\nContent-Length: 21\r\nUser-Agent: bench\r\n\r\n"
    b'{"content": "hello!"}'
)


async def plain_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["method"] == "POST":
        await receive()
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _receive() -> Message:
    return {"type": "http.request", "body": b'{"content": "hello!"}', "more_body": False}


async def _send(message: Message) -> None:
    return None


async def asgi_ns(app: Callable[[Scope, Receive, Send], Awaitable[None]], n: int) -> float:
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/x", "headers": HEADERS}
    began = time.perf_counter_ns()
    for _ in range(n):
        await app(scope, _receive, _send)
    return (time.perf_counter_ns() - began) / n


class Transport(asyncio.Transport):
    """Accepts writes and drops them; never closes by itself."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name in ("sockname", "peername") else default

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


async def protocol_ns(protocol_class: type[HttpToolsProtocol], n: int) -> float:
    config = uvicorn.Config(plain_app, lifespan="off", log_config=None, access_log=False)
    config.load()
    state = ServerState()
    protocol = protocol_class(config, state, {}, asyncio.get_running_loop())
    protocol.connection_made(Transport())
    began = time.perf_counter_ns()
    for _ in range(n):
        protocol.data_received(REQUEST)
        while state.tasks:
            await asyncio.sleep(0)
    elapsed = (time.perf_counter_ns() - began) / n
    protocol.connection_lost(None)
    return elapsed


def _best(samples: list[float]) -> float:
    return min(samples)  # the least disturbed round on a shared machine


async def main(n: int) -> None:
    edge = EdgeMiddleware(plain_app, max_body_bytes=1_048_576)
    limits = EdgeLimits(32_768, 100, 10.0, 30.0, 4_096, 64)
    bound = edge_protocol(limits)
    rows: dict[str, list[float]] = {"asgi": [], "asgi+edge": [], "httptools": [], "edge": []}
    for _ in range(ROUNDS):
        rows["asgi"].append(await asgi_ns(plain_app, n))
        rows["asgi+edge"].append(await asgi_ns(edge, n))
        rows["httptools"].append(await protocol_ns(HttpToolsProtocol, n // 4))
        rows["edge"].append(await protocol_ns(bound, n // 4))
    for name, samples in rows.items():
        best, median = _best(samples), statistics.median(samples)
        print(f"{name:<10} best {best:8.0f} ns/request  median {median:8.0f}")
    print(f"EdgeMiddleware adds   {_best(rows['asgi+edge']) - _best(rows['asgi']):6.0f} ns/request")
    print(f"EdgeProtocol adds     {_best(rows['edge']) - _best(rows['httptools']):6.0f} ns/request")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as in production
        runner.run(main(parser.parse_args().requests))
