"""A provider of in-process tools that need no lifecycle of their own (`files`, `http_fetch`)."""

from __future__ import annotations

from collections.abc import Sequence

from soma.core.service import Health
from soma.tools.port import Tool


class BuiltinTools:
    """A fixed list of tools, always available once constructed."""

    def __init__(self, tools: Sequence[Tool], name: str = "builtins") -> None:
        self._name = name
        self._tools = tuple(tools)

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def health(self) -> Health:
        return Health.healthy(", ".join(tool.spec.name for tool in self._tools))

    def tools(self) -> Sequence[Tool]:
        return self._tools
