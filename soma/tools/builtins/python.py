"""The `python` built-in: code run by the sandbox's Python, in the session's workspace."""

from __future__ import annotations

from typing import Any

from soma.tools.port import ToolCallContext, ToolOutcome, ToolSpec
from soma.tools.sandbox.program import Program, Sandbox

MAX_CODE_CHARS = 200_000

SPEC = ToolSpec(
    name="python",
    description=(
        "Run a Python 3 program (standard library only) and get what it prints. It runs in a "
        "sandbox with no network; its working directory is this conversation's private "
        "workspace, whose files persist between calls. Print the results you need."
    ),
    parameters={
        "type": "object",
        "properties": {
            "code": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_CODE_CHARS,
                "description": "The complete program, e.g. 'print(sum(range(10)))'.",
            }
        },
        "required": ["code"],
        "additionalProperties": False,
    },
    # Code may append to files or otherwise change the workspace: a retry could do it twice.
    idempotent=False,
)


class PythonTool:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    @property
    def spec(self) -> ToolSpec:
        return SPEC

    async def run(self, args: dict[str, Any], call: ToolCallContext) -> ToolOutcome:
        return await self._sandbox.run(Program("python", args["code"]), call)
