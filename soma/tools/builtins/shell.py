"""The `shell` built-in: a command line run by `/bin/sh -c` in the sandbox."""

from __future__ import annotations

from typing import Any

from soma.tools.port import ToolCallContext, ToolOutcome, ToolSpec
from soma.tools.sandbox.program import Program, Sandbox

MAX_COMMAND_CHARS = 100_000

SPEC = ToolSpec(
    name="shell",
    description=(
        "Run a POSIX shell command line (/bin/sh -c) and get its output. It runs in a sandbox "
        "with no network and a read-only system; its working directory is this "
        "conversation's private workspace, whose files persist between calls."
    ),
    parameters={
        "type": "object",
        "properties": {
            "command": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_COMMAND_CHARS,
                "description": "e.g. 'ls -la && wc -l notes.txt'.",
            }
        },
        "required": ["command"],
        "additionalProperties": False,
    },
    idempotent=False,
)


class ShellTool:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    @property
    def spec(self) -> ToolSpec:
        return SPEC

    async def run(self, args: dict[str, Any], call: ToolCallContext) -> ToolOutcome:
        command = args["command"]
        if "\x00" in command:
            # A command line is a C string: exec would refuse it.
            return ToolOutcome.error("the command contains a NUL character")
        return await self._sandbox.run(Program("shell", command), call)
