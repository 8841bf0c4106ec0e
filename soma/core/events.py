"""The bus envelope (ARCHITECTURE §7)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, Field

from soma.core.clock import utcnow
from soma.core.ids import new_id


class Envelope(BaseModel):
    event_id: str = Field(default_factory=new_id)
    type: str
    version: int = 1
    tenant_id: str
    session_id: str | None = None
    run_id: str | None = None
    ts: str = Field(default_factory=lambda: utcnow().isoformat())
    payload: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        # The fields are plain JSON values already: no need for model_dump's conversions.
        return orjson.dumps(self.__dict__)

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        return cls.model_validate(orjson.loads(data))
