"""The MCP client against a real MCP server (the SDK's own), over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import SecretStr

from soma.config.tools import McpServerSettings
from soma.core.errors import StartupError
from soma.core.service import HealthStatus
from soma.tools.builtins.files import FilesTool
from soma.tools.builtins.provider import BuiltinTools
from soma.tools.catalog import Catalog
from soma.tools.mcp import McpProvider, mcp_providers
from soma.tools.port import ToolCallContext, ToolOutcome
from soma.tools.workspace import Workspaces

pytestmark = pytest.mark.integration

SERVER = str(Path(__file__).resolve().parents[1] / "support" / "mcp_server.py")
TOOLS = ["add", "echo", "bump", "fail", "whoami", "slow", "exit_now"]


def stdio_settings(**overrides: Any) -> McpServerSettings:
    values: dict[str, Any] = {
        "command": [sys.executable, SERVER, "--stdio"],
        "env": {"DEMO_TOKEN": SecretStr("token-for-demo")},
        "restart_backoff_s": 0.1,
        "restart_wait_s": 30,
    }
    values.update(overrides)
    return McpServerSettings(**values)


def servers() -> list[psutil.Process]:
    """This test process's MCP server children still alive (zombies count: nobody reaped them)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if SERVER in " ".join(child.cmdline()) or child.status() == psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def ctx(timeout_s: float = 30) -> ToolCallContext:
    return ToolCallContext("t1", "a1", "s1", "r1", "c1", Path("/nonexistent"), timeout_s)


async def call(provider: McpProvider, tool: str, **args: Any) -> ToolOutcome:
    for candidate in provider.tools():
        if candidate.spec.name == f"{provider.server}.{tool}":
            return await candidate.run(args, ctx())
    raise AssertionError(f"{tool} is not listed")


async def server_pid(provider: McpProvider) -> int:
    outcome = await call(provider, "whoami", variable="DEMO_TOKEN")
    assert outcome.status == "ok", outcome.output
    pid = outcome.detail["structured"]["pid"]
    assert isinstance(pid, int)
    return pid


async def until(condition: Any, what: str, timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.02)


@pytest.fixture
async def demo() -> AsyncIterator[McpProvider]:
    provider = McpProvider("demo", stdio_settings(), max_output_chars=1_000)
    await provider.start()
    yield provider
    await provider.stop()
    assert servers() == []


@pytest.fixture
def http_server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    process = start_http_server(0)
    assert process.stdout is not None
    url = process.stdout.readline().split()[1]
    yield url, process
    stop_process(process)


def start_http_server(port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            *(sys.executable, SERVER, "--http", "--port", str(port)),
            *("--require-header", "X-Token=s3cret"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process


def stop_process(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_stdio_tools_are_listed_with_schemas_and_hints(demo: McpProvider) -> None:
    specs = {tool.spec.name: tool.spec for tool in demo.tools()}
    assert sorted(specs) == sorted(f"demo.{name}" for name in TOOLS)
    add = specs["demo.add"]
    assert add.source == "mcp:demo"
    assert add.description == "Add two integers."
    assert add.parameters["type"] == "object"
    assert add.parameters["required"] == ["a", "b"]
    assert add.parameters["properties"]["a"]["type"] == "integer"
    # readOnlyHint and idempotentHint make a tool safe to retry; the others are not.
    assert add.idempotent is True
    assert specs["demo.echo"].idempotent is True
    assert specs["demo.bump"].idempotent is False
    assert specs["demo.fail"].idempotent is False
    health = await demo.health()
    assert health.status == HealthStatus.HEALTHY
    assert health.detail == "7 tools"


async def test_stdio_calls_turn_results_into_outcomes(
    demo: McpProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    added = await call(demo, "add", a=2, b=40)
    assert added.status == "ok"
    assert added.output == "42"
    assert added.detail == {"server": "demo", "tool": "add", "structured": {"result": 42}}
    failed = await call(demo, "fail", message="the disk is full")
    assert failed.status == "error"
    assert "the disk is full" in failed.output
    bad_args = await call(demo, "add", a="two", b=1)
    assert bad_args.status == "error"
    env = await call(demo, "whoami", variable="DEMO_TOKEN")
    assert env.detail["structured"]["value"] == "token-for-demo"
    # The platform's own environment does not reach the server.
    home = await call(demo, "whoami", variable="SOMA_DATABASE__URL")
    assert home.detail["structured"]["value"] is None
    many = await asyncio.gather(*(call(demo, "add", a=i, b=i) for i in range(20)))
    assert [outcome.output for outcome in many] == [str(2 * i) for i in range(20)]


async def test_a_killed_stdio_server_is_restarted_and_the_next_call_works(
    demo: McpProvider,
) -> None:
    first = await server_pid(demo)
    assert [process.pid for process in servers()] == [first]
    os.kill(first, signal.SIGKILL)

    async def degraded() -> bool:
        return (await demo.health()).status != HealthStatus.HEALTHY

    await until(degraded, "the loss is noticed")
    # The next call waits for the restart (bounded by restart_wait_s) and works.
    second = await server_pid(demo)
    assert second != first
    assert not psutil.pid_exists(first)  # reaped, not a zombie
    assert [process.pid for process in servers()] == [second]
    assert (await demo.health()).status == HealthStatus.HEALTHY
    assert demo.restarts == 1


async def test_a_server_that_dies_mid_call_gives_an_interrupted_result(
    demo: McpProvider,
) -> None:
    first = await server_pid(demo)
    died = await call(demo, "exit_now")
    assert died.status == "error"
    assert died.detail["interrupted"] is True
    assert "went away during the call" in died.output
    again = await call(demo, "add", a=1, b=1)
    assert again.status == "ok" and again.output == "2"
    assert await server_pid(demo) != first


async def test_a_call_while_the_server_is_down_gets_an_error_after_a_bounded_wait() -> None:
    provider = McpProvider(
        "demo", stdio_settings(restart_backoff_s=60, restart_wait_s=0.2), max_output_chars=1_000
    )
    await provider.start()
    try:
        os.kill(await server_pid(provider), signal.SIGKILL)

        async def down() -> bool:
            return (await provider.health()).status == HealthStatus.DEGRADED

        await until(down, "the loss is noticed")
        outcome = await call(provider, "add", a=1, b=2)
        assert outcome.status == "error"
        assert "is not available" in outcome.output
        assert "reconnecting in 60 s" in outcome.output
        # The tools stay listed while their server is away.
        assert len(provider.tools()) == len(TOOLS)
    finally:
        await provider.stop()
    # Stopped during its backoff: no server was started again, nothing is left behind.
    assert servers() == []
    assert (await provider.health()).status == HealthStatus.STOPPED
    assert provider.tools() == ()


async def test_stop_leaves_no_process_behind() -> None:
    provider = McpProvider("demo", stdio_settings(), max_output_chars=1_000)
    await provider.start()
    pid = await server_pid(provider)
    assert psutil.pid_exists(pid)
    await provider.stop()
    assert not psutil.pid_exists(pid)
    assert servers() == []


async def test_a_server_that_cannot_start_fails_start_with_the_reason() -> None:
    gone = McpProvider("gone", stdio_settings(command=["/nonexistent/mcp-server"]), 1_000)
    with pytest.raises(StartupError, match="MCP server 'gone' is unavailable"):
        await gone.start()
    quits = McpProvider("quits", stdio_settings(command=[sys.executable, "-c", "pass"]), 1_000)
    with pytest.raises(StartupError, match="'quits' is unavailable"):
        await quits.start()
    assert (await quits.health()).status == HealthStatus.UNHEALTHY
    assert servers() == []


def test_server_names_must_not_contain_dots() -> None:
    with pytest.raises(ValueError, match="no dots"):
        McpProvider("my.server", stdio_settings(), 1_000)
    built = mcp_providers({"one": stdio_settings(), "two": stdio_settings()}, 1_000)
    assert [provider.name for provider in built] == ["mcp:one", "mcp:two"]


async def test_streamable_http_tools_are_listed_and_called_with_headers(
    http_server: tuple[str, subprocess.Popen[str]],
) -> None:
    url, _ = http_server
    settings = McpServerSettings(url=url, headers={"X-Token": SecretStr("s3cret")})
    provider = McpProvider("remote", settings, max_output_chars=1_000)
    await provider.start()
    try:
        names = sorted(tool.spec.name for tool in provider.tools())
        assert names == sorted(f"remote.{name}" for name in TOOLS)
        assert all(tool.spec.source == "mcp:remote" for tool in provider.tools())
        added = await call(provider, "add", a=20, b=22)
        assert added.status == "ok" and added.output == "42"
        echoed = await call(provider, "echo", text="über ✓")
        assert echoed.output == "über ✓"
        failed = await call(provider, "fail", message="remote failure")
        assert failed.status == "error" and "remote failure" in failed.output
    finally:
        await provider.stop()


async def test_streamable_http_without_the_header_fails_start(
    http_server: tuple[str, subprocess.Popen[str]],
) -> None:
    url, _ = http_server
    provider = McpProvider("remote", McpServerSettings(url=url), max_output_chars=1_000)
    with pytest.raises(StartupError, match="connecting failed: MCP error"):
        await provider.start()


async def test_a_lost_http_server_degrades_health_and_is_reconnected(
    http_server: tuple[str, subprocess.Popen[str]],
) -> None:
    url, process = http_server
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    settings = McpServerSettings(
        url=url, headers={"X-Token": SecretStr("s3cret")}, restart_backoff_s=0.1, restart_wait_s=30
    )
    provider = McpProvider("remote", settings, max_output_chars=1_000)
    await provider.start()
    replacement: subprocess.Popen[str] | None = None
    try:
        assert (await call(provider, "add", a=1, b=2)).output == "3"
        stop_process(process)
        lost = await call(provider, "add", a=1, b=2)
        assert lost.status == "error", lost.output
        assert (await provider.health()).status == HealthStatus.DEGRADED
        replacement = start_http_server(port)
        assert replacement.stdout is not None
        assert replacement.stdout.readline().startswith("READY")
        back = await call(provider, "add", a=2, b=2)
        assert back.status == "ok" and back.output == "4"
        assert (await provider.health()).status == HealthStatus.HEALTHY
    finally:
        await provider.stop()
        if replacement is not None:
            stop_process(replacement)


async def test_the_catalog_takes_mcp_tools_beside_the_builtins(tmp_path: Path) -> None:
    files = FilesTool(Workspaces(tmp_path / "workspaces", quota_bytes=10_000))
    catalog = Catalog([BuiltinTools([files]), McpProvider("demo", stdio_settings(), 1_000)])
    await catalog.start()
    try:
        assert [spec.name for spec in catalog.tools_for(["files"])] == ["files"]
        assert [spec.name for spec in catalog.tools_for(["demo.a*"])] == ["demo.add"]
        assert len(catalog.tools_for(["*"])) == 1 + len(TOOLS)
        assert catalog.validate("demo.add", {"a": 1, "b": 2}) == []
        assert catalog.validate("demo.add", {"a": "x"}) == [
            "at /: 'b' is a required property",
            "at /a: 'x' is not of type 'integer'",
        ]
        tool = catalog.get("demo.add")
        assert tool is not None
        assert (await tool.run({"a": 3, "b": 4}, ctx())).output == "7"
        health = await catalog.health()
        assert health["mcp:demo"].status == HealthStatus.HEALTHY
    finally:
        await catalog.stop()
    assert servers() == []
