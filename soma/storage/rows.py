"""Column lists and row → object conversion for the raw-driver run stores.

The SQLAlchemy repositories and these stores read the same tables; the stores select columns
in these fixed orders and convert positionally, with the backend's own JSON and timestamp
decoding passed in (text on SQLite, native on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from soma.runs.events import RunEvent
from soma.storage.repositories.agents import Agent, AgentSettings
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run
from soma.storage.repositories.sessions import Session
from soma.storage.repositories.tool_calls import ToolCall

RUN = ("id", "tenant_id", "session_id", "agent_id", "message_id", "status", "attempt",
       "lease_owner", "lease_expires_at", "usage", "error", "created_at", "started_at",
       "finished_at", "steps")  # fmt: skip
MESSAGE = ("id", "tenant_id", "session_id", "run_id", "role", "content", "tool_calls",
           "tool_call_id", "metadata", "seq", "idempotency_key", "created_at")  # fmt: skip
AGENT = ("id", "tenant_id", "name", "instructions", "model", "tools", "memory", "settings",
         "created_at", "updated_at")  # fmt: skip
SESSION = ("id", "tenant_id", "agent_id", "title", "metadata", "created_at", "end_user")
TOOL_CALL = ("id", "tenant_id", "run_id", "session_id", "call_id", "name", "args", "status",
             "result", "error", "approval_id", "created_at", "finished_at", "started_at",
             "position", "event_base")  # fmt: skip

Decode = Callable[[Any], Any]


def columns(names: Sequence[str], alias: str | None = None) -> str:
    """`a.id, a.tenant_id, ...` for a SELECT list."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + name for name in names)


def in_list(values: Sequence[str]) -> str:
    """`('a', 'b')`: a constant list of words written into a statement."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def placeholders(count: int, style: str, start: int = 1) -> str:
    """`?, ?, ?` (SQLite) or `$1, $2, $3` (PostgreSQL)."""
    if style == "qmark":
        return ", ".join("?" * count)
    return ", ".join(f"${i}" for i in range(start, start + count))


class Codec:
    """How one backend's raw values become Python values."""

    __slots__ = ("json", "ts")

    def __init__(self, json: Decode, ts: Decode) -> None:
        self.json = json
        self.ts = ts

    def run(self, row: Sequence[Any], at: int = 0) -> Run:
        j, t = self.json, self.ts
        return Run(
            id=row[at],
            tenant_id=row[at + 1],
            session_id=row[at + 2],
            agent_id=row[at + 3],
            message_id=row[at + 4],
            status=row[at + 5],
            attempt=row[at + 6],
            lease_owner=row[at + 7],
            lease_expires_at=t(row[at + 8]),
            usage=j(row[at + 9]),
            error=row[at + 10],
            created_at=t(row[at + 11]),
            started_at=t(row[at + 12]),
            finished_at=t(row[at + 13]),
            steps=row[at + 14],
        )

    def message(self, row: Sequence[Any], at: int = 0) -> Message:
        return Message(
            id=row[at],
            tenant_id=row[at + 1],
            session_id=row[at + 2],
            run_id=row[at + 3],
            role=row[at + 4],
            content=row[at + 5],
            tool_calls=self.json(row[at + 6]),
            tool_call_id=row[at + 7],
            metadata=self.json(row[at + 8]) or {},
            seq=row[at + 9],
            idempotency_key=row[at + 10],
            created_at=self.ts(row[at + 11]),
        )

    def agent(self, row: Sequence[Any], at: int = 0) -> Agent:
        return Agent(
            id=row[at],
            tenant_id=row[at + 1],
            name=row[at + 2],
            instructions=row[at + 3],
            model=row[at + 4],
            tools=tuple(self.json(row[at + 5]) or ()),
            memory=bool(row[at + 6]),
            settings=AgentSettings.from_json(self.json(row[at + 7]) or {}),
            created_at=self.ts(row[at + 8]),
            updated_at=self.ts(row[at + 9]),
        )

    def session(self, row: Sequence[Any], at: int = 0) -> Session:
        return Session(
            id=row[at],
            tenant_id=row[at + 1],
            agent_id=row[at + 2],
            title=row[at + 3],
            metadata=self.json(row[at + 4]) or {},
            created_at=self.ts(row[at + 5]),
            user=row[at + 6],
        )

    def tool_call(self, row: Sequence[Any], at: int = 0) -> ToolCall:
        j, t = self.json, self.ts
        return ToolCall(
            id=row[at],
            tenant_id=row[at + 1],
            run_id=row[at + 2],
            session_id=row[at + 3],
            call_id=row[at + 4],
            name=row[at + 5],
            args=dict(j(row[at + 6])),
            status=row[at + 7],
            result=j(row[at + 8]),
            error=row[at + 9],
            approval_id=row[at + 10],
            created_at=t(row[at + 11]),
            finished_at=t(row[at + 12]),
            started_at=t(row[at + 13]),
            position=row[at + 14],
            event_base=row[at + 15],
        )

    def event(self, row: Sequence[Any]) -> RunEvent:
        return RunEvent(row[0], row[1], self.json(row[2]) or {})


def json_text(value: Any) -> str | None:
    """JSON as SQLite stores it (the SQLAlchemy JSON type's serializer); None stays NULL."""
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def json_of_text(value: str | bytes | None) -> Any:
    return None if value is None else orjson.loads(value)


def sqlite_ts(value: datetime | None) -> str | None:
    """A UTC timestamp in the text form SQLAlchemy's SQLite DateTime writes (and compares)."""
    if value is None:
        return None
    utc = value.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond:06d}"
    )


def ts_of_text(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def ts_of_iso(value: Any) -> datetime | None:
    """A timestamp from PostgreSQL: native, or ISO text when it came through JSON."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def identity(value: Any) -> Any:
    return value


SQLITE = Codec(json_of_text, ts_of_text)
POSTGRES = Codec(identity, ts_of_iso)
