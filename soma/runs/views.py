"""The JSON form of runs and messages, as events carry them and the API returns them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def run_json(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "session_id": run.session_id,
        "agent_id": run.agent_id,
        "message_id": run.message_id,
        "status": run.status,
        "attempt": run.attempt,
        "usage": run.usage,
        "error": run.error,
        "created_at": _ts(run.created_at),
        "started_at": _ts(run.started_at),
        "finished_at": _ts(run.finished_at),
    }


def message_json(message: Message) -> dict[str, Any]:
    """The same fields as the sessions API's message listing."""
    return {
        "id": message.id,
        "session_id": message.session_id,
        "run_id": message.run_id,
        "role": message.role,
        "content": message.content,
        "tool_calls": message.tool_calls,
        "tool_call_id": message.tool_call_id,
        "metadata": message.metadata,
        "seq": message.seq,
        "created_at": _ts(message.created_at),
    }
