"""The catalog as the tools service publishes it, for the processes that do not run tools.

The conversation worker needs the tool schemas to offer them to the model, and the gateway
lists them on `GET /v1/tools`; both may run where no tool (nor MCP server) does. The tools
service writes the catalog under one cache key on start and whenever it changes.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from soma.tools.port import ToolSpec

CATALOG_KEY = "tools:catalog"


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class PublishedCatalog:
    tools: tuple[ToolSpec, ...]
    isolation: str
    """The sandbox isolation in force where the tools run."""

    def for_patterns(self, patterns: Iterable[str]) -> list[ToolSpec]:
        """Tools whose name matches one of an agent's patterns (fnmatch, case-sensitive)."""
        wanted = [p for p in patterns if p]
        return [t for t in self.tools if any(fnmatch.fnmatchcase(t.name, p) for p in wanted)]

    def encode(self) -> bytes:
        return orjson.dumps({"isolation": self.isolation, "tools": specs_of(self.tools)})

    @classmethod
    def decode(cls, data: bytes) -> PublishedCatalog:
        raw: dict[str, Any] = orjson.loads(data)
        return cls(tuple(ToolSpec(**item) for item in raw["tools"]), str(raw["isolation"]))


class CatalogReader:
    """Reads the published catalog, reusing it for `ttl_s` (tools rarely change)."""

    def __init__(
        self, cache: Cache, ttl_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cache = cache
        self._ttl_s = ttl_s
        self._clock = clock
        self._held: tuple[float, PublishedCatalog | None] | None = None

    async def get(self) -> PublishedCatalog | None:
        """None when no tools service has published (none runs, or none started yet)."""
        now = self._clock()
        if self._held is not None and self._held[0] > now:
            return self._held[1]
        data = await self._cache.get(CATALOG_KEY)
        catalog = None if data is None else PublishedCatalog.decode(data)
        self._held = (now + self._ttl_s, catalog)
        return catalog


def specs_of(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """The JSON form of `GET /v1/tools` items."""
    return [
        {"name": t.name, "description": t.description, "parameters": t.parameters,
         "idempotent": t.idempotent, "source": t.source}
        for t in tools
    ]  # fmt: skip
