"""The catalog: every tool of every provider by name, agents' tool patterns, argument checks."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from soma.core.errors import StartupError
from soma.core.service import Health
from soma.tools.port import Tool, ToolProvider, ToolSpec

log = logging.getLogger(__name__)

MAX_ERRORS = 10
"""Schema errors reported per call (the model reads them; more would be noise)."""
MAX_ERROR_CHARS = 300
"""Longest single error message; a huge argument must not become a huge error."""


class CatalogError(StartupError):
    """The catalog cannot be formed (a name two providers claim, an invalid schema)."""


def check_schema(spec: ToolSpec) -> None:
    """Raise `CatalogError` if `spec.parameters` is not an object schema valid in 2020-12."""
    try:
        Draft202012Validator.check_schema(spec.parameters)
    except SchemaError as exc:
        raise CatalogError(
            f"tool {spec.name!r} has an invalid JSON schema: {_clip(exc.message)}"
        ) from None
    if spec.parameters.get("type") != "object":
        raise CatalogError(f"tool {spec.name!r}: its parameters schema must be of type object")


class Catalog:
    """Tools of a fixed list of providers; started, checked and stopped together."""

    def __init__(self, providers: Sequence[ToolProvider]) -> None:
        names = [provider.name for provider in providers]
        if len(set(names)) != len(names):
            raise CatalogError(f"two tool providers share a name: {names}")
        self._providers = list(providers)
        self._started: list[ToolProvider] = []
        self._snapshot: tuple[Sequence[Tool], ...] = ()
        self._index: dict[str, Tool] = {}
        self._validators: dict[str, tuple[ToolSpec, Draft202012Validator]] = {}

    @property
    def providers(self) -> list[ToolProvider]:
        return list(self._providers)

    async def start(self) -> None:
        """Start every provider in order, then refuse colliding names or invalid schemas."""
        try:
            for provider in self._providers:
                await provider.start()
                self._started.append(provider)
            self.verify()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop the started providers, last first; one failing does not keep others running."""
        while self._started:
            provider = self._started.pop()
            try:
                await provider.stop()
            except Exception:
                log.exception("tool provider %s failed to stop", provider.name)

    async def health(self) -> dict[str, Health]:
        return {provider.name: await provider.health() for provider in self._providers}

    def verify(self) -> None:
        """Raise `CatalogError` naming both providers of a tool name two of them offer."""
        owners: dict[str, str] = {}
        for provider in self._providers:
            for tool in provider.tools():
                spec = tool.spec
                if spec.name in owners:
                    raise CatalogError(
                        f"tool name {spec.name!r} is offered by both {owners[spec.name]!r} "
                        f"and {provider.name!r}: rename one (MCP tools are <server>.<tool>)"
                    )
                owners[spec.name] = provider.name
                check_schema(spec)
        self._refresh()

    def specs(self) -> list[ToolSpec]:
        """Every tool, in provider order (what `GET /v1/tools` lists)."""
        return [tool.spec for tool in self._tools().values()]

    def get(self, name: str) -> Tool | None:
        return self._tools().get(name)

    def tools_for(self, patterns: Iterable[str]) -> list[ToolSpec]:
        """The tools an agent may use: names matching any pattern (fnmatch, case-sensitive)."""
        wanted = [pattern for pattern in patterns if pattern]
        return [
            tool.spec
            for name, tool in self._tools().items()
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in wanted)
        ]

    def validate(self, name: str, args: Any) -> list[str]:
        """Why `args` do not fit the tool's schema (Draft 2020-12); empty when they do."""
        tool = self.get(name)
        if tool is None:
            return [f"unknown tool {name!r}"]
        if not isinstance(args, dict):
            return [f"arguments must be a JSON object, not {type(args).__name__}"]
        validator = self._validator(tool.spec)
        errors = sorted(validator.iter_errors(args), key=lambda e: list(e.absolute_path))
        messages = []
        for error in errors[:MAX_ERRORS]:
            where = "/" + "/".join(str(part) for part in error.absolute_path)
            messages.append(f"at {where}: {_clip(error.message)}")
        if len(errors) > MAX_ERRORS:
            messages.append(f"... and {len(errors) - MAX_ERRORS} more")
        return messages

    def _tools(self) -> dict[str, Tool]:
        snapshot = tuple(provider.tools() for provider in self._providers)
        if len(snapshot) != len(self._snapshot) or any(
            a is not b for a, b in zip(snapshot, self._snapshot, strict=True)
        ):
            self._refresh(snapshot)
        return self._index

    def _refresh(self, snapshot: tuple[Sequence[Tool], ...] | None = None) -> None:
        # A provider's list may change after start (an MCP server re-listed on reconnect):
        # the first provider keeps a contested name; the newcomer is left out and logged.
        if snapshot is None:
            snapshot = tuple(provider.tools() for provider in self._providers)
        index: dict[str, Tool] = {}
        for provider, tools in zip(self._providers, snapshot, strict=True):
            for tool in tools:
                name = tool.spec.name
                if name in index:
                    log.warning("tool %s of provider %s hidden: name taken", name, provider.name)
                    continue
                index[name] = tool
        self._snapshot = snapshot
        self._index = index

    def _validator(self, spec: ToolSpec) -> Draft202012Validator:
        cached = self._validators.get(spec.name)
        if cached is not None and cached[0] is spec:
            return cached[1]
        validator = Draft202012Validator(spec.parameters)
        self._validators[spec.name] = (spec, validator)
        return validator


def _clip(message: str) -> str:
    if len(message) <= MAX_ERROR_CHARS:
        return message
    return message[: MAX_ERROR_CHARS - 3] + "..."
