"""What a memory is: content in a scope, with a kind, tags, a source and its supersession."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

Kind = Literal["fact", "preference", "event", "note"]
Source = Literal["run", "message", "api", "tool"]
KINDS: tuple[str, ...] = get_args(Kind)
SOURCES: tuple[str, ...] = get_args(Source)


class MemoryUnavailableError(Exception):
    """Memory cannot serve now: the service is not running, or its embedder failed."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Tenant + agent + optional end user. Recall in a user's scope also sees the agent's
    shared memories (`user` None); a scope without a user sees only the shared ones."""

    tenant_id: str
    agent_id: str
    user: str | None = None


@dataclass(frozen=True, slots=True)
class Memory:
    id: str
    tenant_id: str
    agent_id: str
    user: str | None
    kind: str
    content: str
    tags: tuple[str, ...]
    source: str
    source_id: str | None
    embedding_model: str
    created_at: datetime
    superseded_by: str | None = None
    superseded_at: datetime | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.tenant_id, self.agent_id, self.user)


@dataclass(frozen=True, slots=True)
class Recalled:
    memory: Memory
    score: float
    """Cosine similarity to the query, in [-1, 1]."""


@dataclass(frozen=True, slots=True)
class NewMemory:
    """A memory to keep; the service embeds it, deduplicates it and decides supersession."""

    scope: Scope
    content: str
    kind: Kind = "fact"
    tags: tuple[str, ...] = ()
    source: Source = "api"
    source_id: str | None = None
    replaces: tuple[str, ...] = ()
    """Live memories of the same scope it changes or contradicts (an extractor's judgement),
    superseded besides those the similarity rule finds."""
