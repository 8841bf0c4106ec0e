"""Bodies of `/v1/memories`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, field_validator

from soma.gateway.schemas.common import EndUser, RequestBody, ResponseBody
from soma.memory.model import Kind, Memory

Tag = Annotated[str, Field(min_length=1, max_length=100)]
MAX_CONTENT_CHARS = 100_000
"""The outer bound; `memory.max_content_chars` is the one in force."""


class MemoryCreate(RequestBody):
    content: Annotated[str, Field(min_length=1, max_length=MAX_CONTENT_CHARS)]
    kind: Kind = "fact"
    tags: Annotated[list[Tag], Field(max_length=32)] = Field(default_factory=list)
    agent: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """Agent name or id; None means the tenant's `assistant`."""
    user: EndUser | None = None
    """The end user it is about; None: shared by every user of the agent."""

    @field_validator("content")
    @classmethod
    def _not_blank(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("content must not be blank")
        return content


class MemoryOut(ResponseBody):
    id: str
    agent_id: str
    user: str | None
    kind: str
    content: str
    tags: list[str]
    source: str
    source_id: str | None
    embedding_model: str
    created_at: datetime
    superseded_by: str | None
    superseded_at: datetime | None
    score: float | None = None
    """Similarity to the query (semantic search only)."""

    @classmethod
    def of(cls, memory: Memory, score: float | None = None) -> MemoryOut:
        return cls(
            id=memory.id,
            agent_id=memory.agent_id,
            user=memory.user,
            kind=memory.kind,
            content=memory.content,
            tags=list(memory.tags),
            source=memory.source,
            source_id=memory.source_id,
            embedding_model=memory.embedding_model,
            created_at=memory.created_at,
            superseded_by=memory.superseded_by,
            superseded_at=memory.superseded_at,
            score=score,
        )


class Remembered(MemoryOut):
    outcome: str
    """`stored`, or `duplicate` (an equal memory was live: it is returned, nothing written)."""
    superseded: list[str]
    """Ids of the memories this one replaced (they stay for history and export)."""


class Forgotten(ResponseBody):
    deleted: int
