"""Settings of the tools service: the sandbox, http_fetch and MCP servers."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from soma.config.section import Section


class SandboxSettings(Section):
    """How `python` and `shell` run (soma/tools/sandbox)."""

    isolation: Literal["bubblewrap", "rlimits"] = "bubblewrap"
    """Required isolation; if the machine cannot give it the tools service is unhealthy.
    `rlimits` (no namespaces) runs only when configured explicitly."""
    bwrap: Path = Path("/usr/bin/bwrap")
    """The bubblewrap binary (Debian package `bubblewrap`)."""
    python: Path | None = None
    """Interpreter of the `python` tool (run with `-I -S`); unset: the one the platform runs on."""
    cpu_s: int = Field(default=30, ge=1, le=3600)
    """RLIMIT_CPU of each sandboxed process."""
    memory_bytes: int = Field(default=1 << 30, ge=64 << 20)
    """RLIMIT_AS of each sandboxed process."""
    max_file_bytes: int = Field(default=64 << 20, ge=1 << 20)
    """RLIMIT_FSIZE: the largest file a call may write."""
    max_processes: int = Field(default=32, ge=4, le=4096)
    """RLIMIT_NPROC: processes and threads one call may have at once."""
    max_open_files: int = Field(default=256, ge=32, le=65536)
    """RLIMIT_NOFILE of each sandboxed process."""
    max_output_bytes: int = Field(default=1 << 20, ge=4096)
    """stdout plus stderr of one call; past this the call is killed."""
    tmp_bytes: int = Field(default=64 << 20, ge=1 << 20)
    """Size of the private /tmp (memory-backed) under bubblewrap."""
    uid_base: int = Field(default=2_100_000_000, ge=1000, le=2_140_000_000)
    """When the platform runs as root, calls run as uids from here on, one per busy workspace
    (never root: the kernel does not apply RLIMIT_NPROC to uid 0)."""
    uid_count: int = Field(default=1024, ge=1, le=65_536)
    """How many such uids, shared by every platform process of the machine (at least
    tools.max_concurrent_calls)."""
    uid_lock_dir: Path = Path("/run/lock/soma-sandbox")
    """Where platform processes of one machine lock the uids they use (root only)."""


_ALLOW_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class HttpFetchSettings(Section):
    """The `http_fetch` built-in."""

    allow_hosts: list[str] = []
    """Hosts or CIDR ranges that may be fetched although private, loopback or link-local."""
    max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    """Response body read per fetch; the rest is not downloaded (the model is told)."""
    timeout_s: float = Field(default=20.0, gt=0)
    """The whole fetch: lookups, connects, redirects and body (a call's own budget may cut it)."""
    max_redirects: int = Field(default=5, ge=0, le=20)
    """Redirects one fetch follows."""
    user_agent: str = "SomaAgent01-http_fetch/0.1"
    """User-Agent header of fetches."""

    @field_validator("allow_hosts")
    @classmethod
    def _hosts_or_networks(cls, value: list[str]) -> list[str]:
        entries = []
        for entry in value:
            entry = entry.strip().lower().rstrip(".")
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not _ALLOW_HOST.fullmatch(entry):
                    raise ValueError(
                        f"allow_hosts: {entry!r} is not a host name, `*.domain`, address or CIDR"
                    ) from None
            entries.append(entry)
        return entries


class McpServerSettings(Section):
    """One MCP server whose tools join the catalog as `<name>.<tool>`."""

    command: list[str] | None = None
    """stdio: the command line of the server process (owned and restarted by the service)."""
    url: str | None = None
    """Streamable HTTP: the endpoint URL."""
    headers: dict[str, SecretStr] = {}
    """HTTP: headers sent with every request (e.g. authorization)."""
    env: dict[str, SecretStr] = {}
    """stdio: variables added to the few the SDK passes on (PATH, HOME, ...); nothing else
    of the platform's environment reaches the server."""
    cwd: Path | None = None
    """stdio: working directory of the server process."""
    connect_timeout_s: float = Field(default=30.0, gt=0)
    """Connecting and listing the tools, at start and on every reconnect."""
    restart_backoff_s: float = Field(default=0.5, gt=0)
    """First wait before a lost server is reconnected (a stdio one restarted); doubles."""
    restart_backoff_max_s: float = Field(default=30.0, gt=0)
    """Longest wait between reconnects of a lost server."""
    restart_wait_s: float = Field(default=10.0, ge=0)
    """How long a call waits for a server being restarted before it gets an error result."""
    probe_interval_s: float = Field(default=30.0, gt=0)
    """How often the tool list is fetched again (it may change; a dead HTTP server shows)."""

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server needs exactly one of command (stdio) and url (http)")
        if self.command is not None and (not self.command or not self.command[0]):
            raise ValueError("an MCP server's command needs at least the program to run")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("an MCP server's url must be http:// or https://")
        return self


class ToolsSettings(Section):
    call_timeout_s: float = Field(default=60.0, gt=0)
    """Bound on one tool call."""
    max_output_chars: int = Field(default=16_000, ge=256)
    """The longest tool output a model reads (the rest is cut, and it is told so)."""
    approval_timeout_s: float = Field(default=3600.0, gt=0)
    """An approval not decided this long expires as a deny."""
    workspace_quota_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    """Bytes a conversation's workspace (the `files` tool) may hold."""
    max_concurrent_calls: int = Field(default=32, ge=1, le=10_000)
    """Tool calls one worker process runs at once."""
    sandbox: SandboxSettings = SandboxSettings()
    http_fetch: HttpFetchSettings = HttpFetchSettings()
    mcp_servers: dict[str, McpServerSettings] = {}
    """MCP servers by name; their tools join the catalog."""
