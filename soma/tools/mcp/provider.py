"""One MCP server as a tool provider: connected at start, reconnected (restarted) when lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import anyio
from mcp import Client, MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, Implementation
from pydantic import ValidationError

from soma.config.tools import McpServerSettings
from soma.core.errors import StartupError
from soma.core.service import Health, HealthStatus
from soma.tools.mcp.convert import SERVER_NAME, outcome_for, spec_for
from soma.tools.mcp.transport import open_transport
from soma.tools.port import Tool, ToolCallContext, ToolOutcome, ToolSpec
from soma.version import VERSION

log = logging.getLogger(__name__)

STABLE_S = 10.0
"""A connection that lived this long resets the restart backoff."""
STOP_TIMEOUT_S = 10.0
"""Longest `stop()` waits for the SDK's own shutdown (stdin closed, TERM, KILL: ~6 s)."""
MAX_PAGES = 100
"""Pages of `tools/list` read per listing: a server that never ends its list cannot hang us."""
CLIENT = Implementation(name="somaagent01", version=VERSION)


class McpTool:
    """One tool of an MCP server; calls go through its provider's current connection."""

    def __init__(self, provider: McpProvider, spec: ToolSpec, remote_name: str) -> None:
        self._provider = provider
        self._spec = spec
        self.remote_name = remote_name

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    async def run(self, args: dict[str, Any], call: ToolCallContext) -> ToolOutcome:
        return await self._provider.call(self.remote_name, args, call)


class McpProvider:
    """Owns the connection to one MCP server (and, for stdio, its child process)."""

    def __init__(
        self,
        server: str,
        settings: McpServerSettings,
        max_output_chars: int,
        errlog: TextIO | None = None,
    ) -> None:
        if not SERVER_NAME.fullmatch(server):
            raise ValueError(
                f"MCP server name {server!r}: use letters, digits, '_' and '-' (no dots)"
            )
        self.server = server
        self._settings = settings
        self._max_chars = max_output_chars
        self._errlog = errlog
        self._tools: tuple[McpTool, ...] = ()
        self._client: Client | None = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._lost = False
        self._task: asyncio.Task[None] | None = None
        self._connecting: anyio.CancelScope | None = None
        self._generation = 0
        self._first: asyncio.Future[str | None] | None = None
        self._status = HealthStatus.STOPPED
        self._detail = "not started"
        self.restarts = 0

    @property
    def name(self) -> str:
        return f"mcp:{self.server}"

    def tools(self) -> Sequence[Tool]:
        return self._tools

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"{self.name} is already started")
        self._stopping = False
        self._status, self._detail = HealthStatus.STARTING, "connecting"
        self._first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._supervise(), name=self.name)
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s + 1):
                failure = await asyncio.shield(self._first)
        except TimeoutError:
            failure = f"no answer within {self._settings.connect_timeout_s:g} s"
        if failure is not None:
            await self.stop()
            self._status, self._detail = HealthStatus.UNHEALTHY, failure
            raise StartupError(f"MCP server {self.server!r} is unavailable: {failure}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._connecting is not None:
            self._connecting.cancel()  # a connect in progress ends now, not at its timeout
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
            if not done:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._tools = ()
        self._status, self._detail = HealthStatus.STOPPED, "stopped"

    async def health(self) -> Health:
        return Health(self._status, self._detail)

    async def call(self, tool: str, args: dict[str, Any], call: ToolCallContext) -> ToolOutcome:
        """Call `tool` on the server; a server that is down gives an error outcome."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call.timeout_s
        client = await self._connection(min(self._settings.restart_wait_s, call.timeout_s))
        generation = self._generation
        detail = {"server": self.server, "tool": tool}
        if client is None:
            return ToolOutcome.error(
                f"the MCP server {self.server!r} is not available ({self._detail})", **detail
            )
        remaining = max(deadline - loop.time(), 0.001)
        try:
            async with asyncio.timeout(remaining + 1):
                result = await client.call_tool(tool, args, read_timeout_seconds=remaining)
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                return ToolOutcome.error(f"timed out after {remaining:.3g} s", **detail)
            if exc.code == CONNECTION_CLOSED:
                self._connection_lost(generation)
                return ToolOutcome.error(
                    f"the MCP server {self.server!r} went away during the call; "
                    "it may or may not have acted",
                    interrupted=True,
                    **detail,
                )
            return ToolOutcome.error(f"MCP error {exc.code}: {exc.message}", **detail)
        except TimeoutError:
            return ToolOutcome.error(f"timed out after {remaining:.3g} s", **detail)
        except ValidationError as exc:
            return ToolOutcome.error(
                f"the MCP server's answer is malformed: {exc.error_count()} errors", **detail
            )
        return outcome_for(self.server, tool, result, self._max_chars)

    async def _connection(self, wait_s: float) -> Client | None:
        if not self._ready.is_set() and not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._ready.wait()
        return self._client if self._ready.is_set() else None

    def _connection_lost(self, generation: int) -> None:
        # A late signal about an earlier connection must not disturb the current one.
        if generation == self._generation:
            self._lost = True
            self._ready.clear()
            self._wake.set()
            if not self._stopping:
                self._status, self._detail = HealthStatus.DEGRADED, "connection lost"

    async def _supervise(self) -> None:
        try:
            await self._keep_connected()
        except Exception as exc:  # a bug here must show in health, not vanish with the task
            log.exception("MCP server %s: supervision failed", self.server)
            self._status, self._detail = HealthStatus.UNHEALTHY, f"failed: {_describe(exc)}"
            if self._first is not None and not self._first.done():
                self._first.set_result(self._detail)

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self._settings.restart_backoff_s
        while not self._stopping:
            began = loop.time()
            error = await self._connect_once()
            first = self._first
            if first is not None and not first.done():
                # The first connection never came up: start() reports it, no retry.
                first.set_result(error or "the server closed the connection at once")
                return
            if self._stopping:
                return
            if loop.time() - began >= STABLE_S:
                backoff = self._settings.restart_backoff_s
            self.restarts += 1
            reason = error or "the server closed the connection"
            self._status = HealthStatus.DEGRADED
            self._detail = f"reconnecting in {backoff:g} s (attempt {self.restarts}): {reason}"
            log.warning(
                "MCP server %s lost: %s; reconnecting in %g s", self.server, reason, backoff
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._wake.wait()
            backoff = min(backoff * 2, self._settings.restart_backoff_max_s)

    async def _connect_once(self) -> str | None:
        """Connect, list, serve until the connection is lost or stop; why it ended, if not stop."""
        self._lost = False
        self._wake.clear()
        self._generation += 1
        generation = self._generation
        transport = open_transport(
            self._settings, lambda: self._connection_lost(generation), self._errlog
        )
        timeout = self._settings.connect_timeout_s
        phase = "connecting"
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
                self._connecting = scope
                async with Client(transport, mode="auto", cache=None, client_info=CLIENT) as client:
                    phase = "listing its tools"
                    self._tools = await self._list(client)
                    scope.deadline = math.inf
                    self._connecting = None
                    self._connected(client)
                    phase = "serving"
                    try:
                        return await self._serve(client)
                    finally:
                        self._ready.clear()
                        self._client = None
                        if not self._stopping:
                            self._status, self._detail = HealthStatus.DEGRADED, "connection lost"
        except Exception as exc:
            return f"{phase} failed: {_describe(exc)}" if phase != "serving" else _describe(exc)
        finally:
            self._connecting = None
        if self._stopping:
            return None
        return f"{phase} took longer than {timeout:g} s"

    def _connected(self, client: Client) -> None:
        self._client = client
        self._ready.set()
        self._status, self._detail = HealthStatus.HEALTHY, f"{len(self._tools)} tools"
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        log.info("MCP server %s connected: %d tools", self.server, len(self._tools))

    async def _serve(self, client: Client) -> str | None:
        """Wait for loss or stop, re-listing the tools every `probe_interval_s`."""
        while True:
            with anyio.move_on_after(self._settings.probe_interval_s):
                await self._wake.wait()
            if self._stopping:
                return None
            if self._lost:
                if self._settings.command is not None:
                    return "the server process ended"
                return "the connection was lost"
            try:
                with anyio.fail_after(self._settings.connect_timeout_s):
                    self._tools = await self._list(client)
                self._status, self._detail = HealthStatus.HEALTHY, f"{len(self._tools)} tools"
            except MCPError as exc:
                if exc.code == CONNECTION_CLOSED:
                    return "the connection was lost"
                self._status = HealthStatus.DEGRADED
                self._detail = f"listing tools failed: {exc.message}"
            except TimeoutError:
                # A busy server may answer late; only a lost connection warrants a restart.
                self._status = HealthStatus.DEGRADED
                self._detail = "listing tools timed out"

    async def _list(self, client: Client) -> tuple[McpTool, ...]:
        found: list[McpTool] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor, cache_mode="bypass")
            for listed in page.tools:
                spec = spec_for(self.server, listed)
                if spec is not None:
                    found.append(McpTool(self, spec, listed.name))
            cursor = page.next_cursor
            if cursor is None:
                break
        return tuple(found)


def mcp_providers(
    servers: Mapping[str, McpServerSettings], max_output_chars: int
) -> list[McpProvider]:
    """One provider per configured server (`tools.mcp_servers`), in configuration order."""
    return [McpProvider(name, config, max_output_chars) for name, config in servers.items()]


def _describe(exc: BaseException) -> str:
    """One line for health and logs: the innermost cause, however the SDK grouped it."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0]
    return line if len(line) <= 300 else line[:297] + "..."
