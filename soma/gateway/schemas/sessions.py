"""Bodies of `/v1/sessions` and their messages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from soma.gateway.schemas.common import (
    EndUser,
    Metadata,
    RequestBody,
    ResponseBody,
    StoredMetadata,
)
from soma.storage.repositories import Message, Session


class SessionCreate(RequestBody):
    agent: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """Agent name or id; None means the tenant's `assistant`."""
    title: Annotated[str, Field(max_length=500)] | None = None
    user: EndUser | None = None
    """The end user this session talks to: its turns recall and keep that user's memories."""
    metadata: Metadata = Field(default_factory=dict)


class SessionOut(ResponseBody):
    id: str
    agent_id: str
    title: str | None
    user: str | None
    metadata: StoredMetadata
    created_at: datetime

    @classmethod
    def of(cls, session: Session) -> SessionOut:
        return cls(
            id=session.id,
            agent_id=session.agent_id,
            title=session.title,
            user=session.user,
            metadata=session.metadata,
            created_at=session.created_at,
        )


class MessageOut(ResponseBody):
    id: str
    session_id: str
    run_id: str | None
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    metadata: StoredMetadata
    seq: int
    created_at: datetime

    @classmethod
    def of(cls, message: Message) -> MessageOut:
        return cls(
            id=message.id,
            session_id=message.session_id,
            run_id=message.run_id,
            role=message.role,
            content=message.content,
            tool_calls=message.tool_calls,
            tool_call_id=message.tool_call_id,
            metadata=message.metadata,
            seq=message.seq,
            created_at=message.created_at,
        )
