"""How an MCP server is reached (a stdio child process, streamable HTTP), watched for loss."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, TextIO

import anyio
import httpx2
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from soma.config.tools import McpServerSettings

TransportStreams = tuple[Any, Any]
"""(read stream, write stream) as the MCP SDK's transports yield them."""


class _WatchedReader:
    """The server's side of a connection; `on_end` runs once the server stops talking."""

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        # The SDK reads the sender's context from streams that carry one (HTTP transport).
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            message: SessionMessage | Exception = await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise
        return message

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedReader:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _WatchedReader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def open_transport(
    settings: McpServerSettings, on_end: Callable[[], None], errlog: TextIO | None = None
) -> AbstractAsyncContextManager[TransportStreams]:
    """A transport for `mcp.Client`: a fresh child process (stdio) or HTTP session per use."""
    if settings.command is not None:
        return _stdio(settings, on_end, errlog or sys.stderr)
    return _http(settings, on_end)


@asynccontextmanager
async def _stdio(
    settings: McpServerSettings, on_end: Callable[[], None], errlog: TextIO
) -> AsyncIterator[TransportStreams]:
    assert settings.command is not None
    params = StdioServerParameters(
        command=settings.command[0],
        args=list(settings.command[1:]),
        env={name: value.get_secret_value() for name, value in settings.env.items()},
        cwd=settings.cwd,
    )
    # The SDK spawns the server in its own process group and, on exit, closes its stdin,
    # then terminates and kills the whole group: the child never outlives the connection.
    async with stdio_client(params, errlog=errlog) as (read, write):
        yield _WatchedReader(read, on_end), write


@asynccontextmanager
async def _http(
    settings: McpServerSettings, on_end: Callable[[], None]
) -> AsyncIterator[TransportStreams]:
    assert settings.url is not None
    headers = {name: value.get_secret_value() for name, value in settings.headers.items()}
    timeout = httpx2.Timeout(settings.connect_timeout_s, read=300.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout, trust_env=False) as client,
        streamable_http_client(settings.url, http_client=client) as (read, write),
    ):
        yield _WatchedReader(read, on_end), write
