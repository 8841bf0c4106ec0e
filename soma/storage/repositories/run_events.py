"""Durable milestone events of a run, numbered per run (what SSE replays after reconnect)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Row

from soma.core.clock import utcnow
from soma.core.errors import ConflictError, NotFoundError
from soma.storage.repositories.base import (
    DIALECTS,
    Repository,
    check_limit,
    dialect_insert,
    next_number,
)
from soma.storage.tables import run_events, runs


@dataclass(frozen=True, slots=True)
class RunEvent:
    run_id: str
    seq: int
    tenant_id: str
    type: str
    data: dict[str, Any]
    created_at: datetime


def _event(row: Row[Any]) -> RunEvent:
    return RunEvent(
        run_id=row.run_id,
        seq=row.seq,
        tenant_id=row.tenant_id,
        type=row.type,
        data=dict(row.data),
        created_at=row.created_at,
    )


def _append_statement(dialect: str, *, numbered: bool) -> Any:
    """INSERT ... SELECT: checks the run's tenant and (unless given) numbers the event."""
    columns = [c.name for c in run_events.c]
    values = [
        next_number(run_events.c.seq, run_events.c.run_id)
        if name == "seq" and numbered
        else bindparam(name, type_=run_events.c[name].type)
        for name in columns
    ]
    source = select(*values).where(
        runs.c.id == bindparam("run_id"), runs.c.tenant_id == bindparam("tenant_id")
    )
    return (
        dialect_insert(dialect, run_events)
        .from_select(columns, source)
        .on_conflict_do_nothing()
        .returning(run_events.c.seq)
    )


_APPEND = {dialect: _append_statement(dialect, numbered=True) for dialect in DIALECTS}
_APPEND_AT = {dialect: _append_statement(dialect, numbered=False) for dialect in DIALECTS}
_APPEND_ATTEMPTS = 10


class RunEventRepository(Repository):
    __slots__ = ()

    async def append(
        self,
        tenant_id: str,
        run_id: str,
        type: str,
        data: dict[str, Any],
        *,
        seq: int | None = None,
    ) -> RunEvent:
        """Append with the next seq, or at `seq` when given (a repeat returns the stored one).

        NotFoundError: no such run for this tenant.
        """
        values: dict[str, Any] = {
            "run_id": run_id,
            "tenant_id": tenant_id,
            "type": type,
            "data": dict(data),
            "created_at": utcnow(),
        }
        dialect = self._conn.dialect.name
        if seq is not None:
            values["seq"] = seq
        statement = _APPEND[dialect] if seq is None else _APPEND_AT[dialect]
        for _ in range(_APPEND_ATTEMPTS):
            inserted = (await self._conn.execute(statement, values)).scalar()
            if inserted is not None:
                return RunEvent(
                    run_id=run_id,
                    seq=inserted,
                    tenant_id=tenant_id,
                    type=type,
                    data=values["data"],
                    created_at=values["created_at"],
                )
            if seq is not None:
                existing = await self.get(tenant_id, run_id, seq)
                if existing is not None:
                    return existing
            if not await self._run_exists(tenant_id, run_id):
                raise NotFoundError(f"run {run_id} not found")
        raise ConflictError(f"could not append to run {run_id}: too much contention")

    async def _run_exists(self, tenant_id: str, run_id: str) -> bool:
        query = select(runs.c.id).where(runs.c.tenant_id == tenant_id, runs.c.id == run_id)
        return (await self._conn.execute(query)).first() is not None

    async def get(self, tenant_id: str, run_id: str, seq: int) -> RunEvent | None:
        query = select(run_events).where(
            run_events.c.tenant_id == tenant_id,
            run_events.c.run_id == run_id,
            run_events.c.seq == seq,
        )
        row = (await self._conn.execute(query)).first()
        return None if row is None else _event(row)

    async def list(
        self, tenant_id: str, run_id: str, *, after_seq: int = 0, limit: int = 1000
    ) -> builtins.list[RunEvent]:
        """Events with seq > `after_seq`, in order."""
        query = (
            select(run_events)
            .where(
                run_events.c.tenant_id == tenant_id,
                run_events.c.run_id == run_id,
                run_events.c.seq > after_seq,
            )
            .order_by(run_events.c.seq)
            .limit(check_limit(limit))
        )
        return [_event(row) for row in (await self._conn.execute(query)).all()]
