"""Tool calls requested by a run: arguments, status, result; unique per (run, call id)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Row

from soma.core.clock import utcnow
from soma.core.errors import ConflictError
from soma.core.ids import new_id
from soma.storage.repositories.base import Repository, insert_or_ignore
from soma.storage.tables import tool_calls

_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    tenant_id: str
    run_id: str
    session_id: str
    call_id: str
    name: str
    args: dict[str, Any]
    status: str
    result: Any
    error: str | None
    approval_id: str | None
    created_at: datetime
    finished_at: datetime | None
    started_at: datetime | None = None
    position: int = 0
    event_base: int = 0


UNFINISHED = ("pending", "running", "awaiting_approval", "approved", "denied")
"""Statuses of a call without a result yet (`denied`: refused by a person, result to write)."""


def _tool_call(row: Row[Any]) -> ToolCall:
    return ToolCall(
        id=row.id,
        tenant_id=row.tenant_id,
        run_id=row.run_id,
        session_id=row.session_id,
        call_id=row.call_id,
        name=row.name,
        args=dict(row.args),
        status=row.status,
        result=row.result,
        error=row.error,
        approval_id=row.approval_id,
        created_at=row.created_at,
        finished_at=row.finished_at,
        started_at=row.started_at,
        position=row.position,
        event_base=row.event_base,
    )


class ToolCallRepository(Repository):
    __slots__ = ()

    async def create(
        self,
        tenant_id: str,
        *,
        run_id: str,
        session_id: str,
        call_id: str,
        name: str,
        args: dict[str, Any],
        status: str = "pending",
        tool_call_id: str | None = None,
        position: int = 0,
        event_base: int = 0,
    ) -> tuple[ToolCall, bool]:
        """Record a call once per (run, call id); returns `(call, inserted)`."""
        call = ToolCall(
            id=tool_call_id or new_id(),
            tenant_id=tenant_id,
            run_id=run_id,
            session_id=session_id,
            call_id=call_id,
            name=name,
            args=dict(args),
            status=status,
            result=None,
            error=None,
            approval_id=None,
            created_at=utcnow(),
            finished_at=None,
            position=position,
            event_base=event_base,
        )
        statement = insert_or_ignore(self._conn, tool_calls, ["run_id", "call_id"]).returning(
            tool_calls.c.id
        )
        values = {
            "id": call.id,
            "tenant_id": tenant_id,
            "run_id": run_id,
            "session_id": session_id,
            "call_id": call_id,
            "name": name,
            "args": call.args,
            "status": status,
            "created_at": call.created_at,
            "position": position,
            "event_base": event_base,
        }
        if (await self._conn.execute(statement, values)).first() is not None:
            return call, True
        existing = await self.get_by_call_id(tenant_id, run_id, call_id)
        if existing is None:
            raise ConflictError("tool call belongs to another tenant")
        return existing, False

    async def get(self, tenant_id: str, tool_call_id: str) -> ToolCall | None:
        query = select(tool_calls).where(
            tool_calls.c.tenant_id == tenant_id, tool_calls.c.id == tool_call_id
        )
        row = (await self._conn.execute(query)).first()
        return None if row is None else _tool_call(row)

    async def get_by_call_id(self, tenant_id: str, run_id: str, call_id: str) -> ToolCall | None:
        query = select(tool_calls).where(
            tool_calls.c.tenant_id == tenant_id,
            tool_calls.c.run_id == run_id,
            tool_calls.c.call_id == call_id,
        )
        row = (await self._conn.execute(query)).first()
        return None if row is None else _tool_call(row)

    async def list_for_run(self, tenant_id: str, run_id: str) -> list[ToolCall]:
        query = (
            select(tool_calls)
            .where(tool_calls.c.tenant_id == tenant_id, tool_calls.c.run_id == run_id)
            .order_by(tool_calls.c.created_at, tool_calls.c.id)
        )
        return [_tool_call(row) for row in (await self._conn.execute(query)).all()]

    async def start(
        self, tenant_id: str, tool_call_id: str, *, now: datetime, from_statuses: Collection[str]
    ) -> ToolCall | None:
        """Mark a call running (at most once from each of `from_statuses`); None if it was not
        in one of them: another delivery started it, or it has a result."""
        statement = (
            update(tool_calls)
            .where(
                tool_calls.c.tenant_id == tenant_id,
                tool_calls.c.id == tool_call_id,
                tool_calls.c.status.in_(list(from_statuses)),
            )
            .values(status="running", started_at=now)
            .returning(*tool_calls.c)
        )
        row = (await self._conn.execute(statement)).first()
        return None if row is None else _tool_call(row)

    async def restart(
        self, tenant_id: str, tool_call_id: str, *, now: datetime, started_before: datetime
    ) -> ToolCall | None:
        """Run an interrupted call again (idempotent tools only): it must still be running
        since before `started_before`; None when another sweep or delivery took it."""
        statement = (
            update(tool_calls)
            .where(
                tool_calls.c.tenant_id == tenant_id,
                tool_calls.c.id == tool_call_id,
                tool_calls.c.status == "running",
                tool_calls.c.started_at < started_before,
            )
            .values(started_at=now)
            .returning(*tool_calls.c)
        )
        row = (await self._conn.execute(statement)).first()
        return None if row is None else _tool_call(row)

    async def count_unfinished(self, tenant_id: str, run_id: str) -> dict[str, int]:
        """How many calls of the run wait for a result, by status."""
        query = (
            select(tool_calls.c.status, func.count())
            .where(
                tool_calls.c.tenant_id == tenant_id,
                tool_calls.c.run_id == run_id,
                tool_calls.c.status.in_(UNFINISHED),
            )
            .group_by(tool_calls.c.status)
        )
        return {row[0]: int(row[1]) for row in (await self._conn.execute(query)).all()}

    async def list_unfinished(self, *, limit: int) -> list[ToolCall]:
        """Calls of every tenant still without a result, oldest first (for the sweep)."""
        query = (
            select(tool_calls)
            .where(tool_calls.c.status.in_(UNFINISHED))
            .order_by(tool_calls.c.created_at)
            .limit(limit)
        )
        return [_tool_call(row) for row in (await self._conn.execute(query)).all()]

    async def update_status(
        self,
        tenant_id: str,
        tool_call_id: str,
        status: str,
        *,
        expected: Collection[str] | None = None,
        result: Any = _UNSET,
        error: str | None = _UNSET,
        approval_id: str | None = _UNSET,
        finished_at: datetime | None = _UNSET,
    ) -> ToolCall | None:
        """Set the status (only from `expected` ones when given); None when nothing matched."""
        values: dict[str, Any] = {"status": status}
        for name, value in (
            ("result", result),
            ("error", error),
            ("approval_id", approval_id),
            ("finished_at", finished_at),
        ):
            if value is not _UNSET:
                values[name] = value
        statement = update(tool_calls).where(
            tool_calls.c.tenant_id == tenant_id, tool_calls.c.id == tool_call_id
        )
        if expected is not None:
            statement = statement.where(tool_calls.c.status.in_(list(expected)))
        row = (
            await self._conn.execute(statement.values(**values).returning(*tool_calls.c))
        ).first()
        return None if row is None else _tool_call(row)
