"""A real MCP server written with the MCP SDK, for the MCP client's tests.

Over stdio (the way the tools service runs it as a child process)::

    python tests/support/mcp_server.py --stdio

Over streamable HTTP, optionally demanding a header (as a gateway token would)::

    python tests/support/mcp_server.py --http --port 0 --require-header "X-Token=s3cret"

prints `READY http://127.0.0.1:<port>/mcp` on stdout once it accepts connections, then serves
until SIGTERM/SIGINT. The file imports nothing from the repository, so it runs from anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def build() -> MCPServer:
    server = MCPServer("demo", log_level="WARNING")
    calls = {"bump": 0}

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool(annotations=ToolAnnotations(idempotent_hint=True))
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def bump() -> int:
        """Count calls (a tool with a side effect: not safe to repeat)."""
        calls["bump"] += 1
        return calls["bump"]

    @server.tool()
    def fail(message: str) -> str:
        """Fail with the given message."""
        raise ToolError(message)

    @server.tool()
    def whoami(variable: str) -> dict[str, Any]:
        """This process's id and one variable of its environment."""
        return {"pid": os.getpid(), "value": os.environ.get(variable)}

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool()
    def exit_now() -> str:
        """Die at once, mid-call (a crashing server)."""
        os._exit(3)

    return server


def require_header(app: App, name: str, value: str) -> App:
    wanted = (name.lower().encode(), value.encode())

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and wanted not in list(scope.get("headers", [])):
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"missing token"})
            return
        await app(scope, receive, send)

    return guarded


async def serve_http(port: int, header: str | None) -> None:
    import uvicorn

    server = build()
    app: App = server.streamable_http_app()
    if header:
        name, _, value = header.partition("=")
        app = require_header(app, name, value)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    web = uvicorn.Server(config)
    task = asyncio.create_task(web.serve(sockets=[sock]))
    while not web.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.01)
    print(f"READY http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
    await task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Demo MCP server for tests")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stdio", action="store_true")
    mode.add_argument("--http", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--require-header", help="NAME=VALUE every HTTP request must carry")
    args = parser.parse_args(argv)
    if args.stdio:
        build().run("stdio")
    else:
        asyncio.run(serve_http(args.port, args.require_header))
    sys.exit(0)


if __name__ == "__main__":
    main()
