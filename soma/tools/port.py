"""What the tools service needs from a tool, and what a tool is given to run one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from soma.core.service import Health

ToolStatus = Literal["ok", "error"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the catalog lists it and the model sees it."""

    name: str
    """Unique in the catalog: `python`, `files`, or `<server>.<tool>` for an MCP server's."""
    description: str
    parameters: dict[str, Any]
    """JSON Schema (an object schema) of the arguments; arguments are checked against it."""
    idempotent: bool = False
    """Safe to run again when a crash interrupted it; otherwise the model gets "interrupted"."""
    source: str = "builtin"
    """`builtin`, or `mcp:<server>`."""


@dataclass(frozen=True, slots=True)
class ToolCallContext:
    """Who asks, and where the call may touch the disk."""

    tenant_id: str
    agent_id: str
    session_id: str
    run_id: str
    call_id: str
    workspace: Path
    """The session's private directory (exists when the call runs)."""
    timeout_s: float
    """Wall-clock budget of this call."""


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a call gave: the text the model reads, and details for the API and logs."""

    status: ToolStatus
    output: str
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, output: str, **detail: Any) -> ToolOutcome:
        return cls("ok", output, detail)

    @classmethod
    def error(cls, output: str, **detail: Any) -> ToolOutcome:
        return cls("error", output, detail)


class Tool(Protocol):
    @property
    def spec(self) -> ToolSpec: ...

    async def run(self, args: dict[str, Any], call: ToolCallContext) -> ToolOutcome:
        """Run one call with arguments already checked against `spec.parameters`.

        What the tool expects to go wrong (a failing command, a refused URL, a missing file)
        is an `error` outcome the model reads; raising means the tool itself broke.
        """
        ...


class ToolProvider(Protocol):
    """A source of tools with a lifecycle: the sandboxed built-ins, or one MCP server."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None:
        """Raise (one line, the reason) when the provider cannot do its job: no fallback."""
        ...

    async def stop(self) -> None: ...

    async def health(self) -> Health: ...

    def tools(self) -> Sequence[Tool]:
        """The tools this provider offers now (an MCP server's list may change)."""
        ...
