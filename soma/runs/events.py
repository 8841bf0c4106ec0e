"""Run event names, their wire form and the id scheme of a run's stream (ARCHITECTURE §8)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

ATTEMPT_SPAN = 1_000_000
"""Ids of attempt N are N*ATTEMPT_SPAN + 1, +2, ...: a retried run's ids stay increasing
even when the previous attempt's last ids died with its process."""


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_TOOLS = "awaiting_tools"
    AWAITING_APPROVAL = "awaiting_approval"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = frozenset(
    {
        RunStatus.QUEUED,
        RunStatus.RUNNING,
        RunStatus.AWAITING_TOOLS,
        RunStatus.AWAITING_APPROVAL,
        RunStatus.CANCELLING,
    }
)
FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class EventType(StrEnum):
    QUEUED = "run.queued"
    STARTED = "run.started"
    DELTA = "message.delta"
    TOOL_CALL = "tool.call"
    APPROVAL_REQUIRED = "tool.approval_required"
    TOOL_RESULT = "tool.result"
    MESSAGE_COMPLETED = "message.completed"
    COMPLETED = "run.completed"
    FAILED = "run.failed"
    CANCELLED = "run.cancelled"


TERMINAL = frozenset({EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED})


@dataclass(frozen=True, slots=True)
class RunEvent:
    id: int
    type: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL

    def encode(self) -> bytes:
        """The stream entry body (the id travels beside it)."""
        return orjson.dumps({"type": self.type, "data": self.data})

    @classmethod
    def decode(cls, event_id: int, body: bytes) -> RunEvent:
        parsed = orjson.loads(body)
        return cls(id=event_id, type=parsed["type"], data=parsed["data"])


def first_id(attempt: int) -> int:
    """The first event id of an attempt (attempt 0 is the gateway's `run.queued`)."""
    return attempt * ATTEMPT_SPAN + 1


def stream_key(run_id: str) -> str:
    return f"run:{run_id}:events"


def cancel_key(run_id: str) -> str:
    return f"run:{run_id}:cancel"
