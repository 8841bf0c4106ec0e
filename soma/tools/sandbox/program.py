"""What the `python` and `shell` built-ins ask of the sandbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from soma.tools.port import ToolCallContext, ToolOutcome


@dataclass(frozen=True, slots=True)
class Program:
    """Python source for the sandbox's interpreter, or a command line for `/bin/sh -c`."""

    kind: Literal["python", "shell"]
    source: str


class Sandbox(Protocol):
    @property
    def isolation(self) -> str:
        """The isolation level in force: `bubblewrap` or `rlimits`."""
        ...

    async def run(self, program: Program, call: ToolCallContext) -> ToolOutcome:
        """Run `program` in the call's workspace; what the program did wrong is an error outcome."""
        ...
