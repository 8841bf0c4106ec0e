"""The tool store on PostgreSQL: asyncpg on the run store's pool, one statement per step.

Parks, starts and records that arrive together go out as one pipelined `fetchmany` (one round
trip, one implicit transaction, one commit); a failing item is then retried alone, so it
fails alone. The statements are in `soma.storage.pg_tool_statements`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from soma.core.errors import NotFoundError
from soma.core.ids import new_id
from soma.runs.tool_store import Loaded, Parked, Record, Recorded, Settlement, Step
from soma.storage.audit_chain import AuditRecord
from soma.storage.batcher import Batcher
from soma.storage.outbox_signal import OutboxSignal
from soma.storage.pg_pool import IN_FLIGHT, MAX_BATCH, PgPool, settled, translated
from soma.storage.pg_tool_statements import LOAD, PARK, RECORD, RESTART, START
from soma.storage.repositories.tool_calls import ToolCall
from soma.storage.rows import AGENT, POSTGRES, RUN, TOOL_CALL

Params = tuple[Any, ...]
_N = len(RUN)


class PostgresToolStore:
    """Shares the run store's `PgPool` (and so its statement counts)."""

    def __init__(self, pg: PgPool, signal: OutboxSignal) -> None:
        self._pg = pg
        self._signal = signal
        self._parks = self._batcher(PARK)
        self._starts = self._batcher(START)
        self._records = self._batcher(RECORD)

    @translated
    async def park(self, step: Step) -> Parked | None:
        run = step.run
        row = await self._parks.submit(_park_params(step))
        if row is None:
            return None
        if row[_N + 1]:
            raise NotFoundError(f"session {run.session_id} not found")
        self._signal.notify()
        parked = POSTGRES.run(row, 1)
        return Parked(parked, step.events(parked.steps))

    @translated
    async def load(self, tenant_id: str, run_id: str, call_ids: Sequence[str]) -> Loaded | None:
        row = await self._pg.pool.fetchrow(LOAD, tenant_id, run_id, list(call_ids))
        self._pg.count(trips=1, statements=1, transactions=0)
        if row is None:
            return None
        agent = None if row[_N] is None else POSTGRES.agent(row, _N)
        found = {c["id"]: _call_of_json(c) for c in row[_N + len(AGENT)] or ()}
        return Loaded(POSTGRES.run(row), agent, [found[i] for i in call_ids if i in found])

    @translated
    async def start(
        self, tenant_id: str, call_id: str, now: datetime, from_statuses: Collection[str]
    ) -> ToolCall | None:
        row = await self._starts.submit((tenant_id, call_id, now, list(from_statuses)))
        return None if row is None else POSTGRES.tool_call(row, 1)

    @translated
    async def restart(
        self, tenant_id: str, call_id: str, now: datetime, started_before: datetime
    ) -> ToolCall | None:
        row = await self._pg.pool.fetchrow(RESTART, tenant_id, call_id, now, started_before)
        self._pg.count(trips=1, statements=1, transactions=1)
        return None if row is None else POSTGRES.tool_call(row)

    @translated
    async def record(self, record: Record) -> Recorded:
        row = await self._records.submit(_record_params(record))
        _, ok, status, written, approval_calls, approval_ids = row
        if not ok:
            raise NotFoundError(f"session {record.run.session_id} not found")
        approvals = dict(zip(approval_calls, approval_ids, strict=True))
        pending = set(written)
        events = []
        for item in record.settlements:
            if item.waits and item.call.id in approvals:
                events.append(item.approval_event(approvals[item.call.id]))
            elif not item.waits and item.call.id in pending:
                pending.discard(item.call.id)  # a call settled twice is written once
                events.append(item.result_event())
        events.sort(key=lambda e: e.id)
        resumed = status == "queued"
        if resumed:
            self._signal.notify()
        return Recorded(events, resumed)

    def _batcher(self, sql: str) -> Batcher[Params, Any]:
        async def flush(items: list[Params]) -> Sequence[Any]:
            return await self._each(sql, items)

        return Batcher(flush, max_batch=MAX_BATCH, max_in_flight=IN_FLIGHT)

    @translated
    async def _each(self, sql: str, items: list[Params]) -> Sequence[Any]:
        """`sql` once per item in one round trip; each answer row starts with its item's index."""
        async with self._pg.pool.acquire() as conn:
            try:
                rows = await conn.fetchmany(sql, [(*p, i) for i, p in enumerate(items)])
            except asyncpg.PostgresError:
                if len(items) == 1:
                    raise
                # Each alone, in its own transaction, now seeing what the others committed.
                return [await settled(self._one(conn, sql, p)) for p in items]
        self._pg.count(trips=1, statements=len(items), transactions=1)
        answers = {row[0]: row for row in rows}
        return [answers.get(i) for i in range(len(items))]

    async def _one(self, conn: asyncpg.Connection, sql: str, params: Params) -> Any:
        row = await conn.fetchrow(sql, *params, 0)
        self._pg.count(trips=1, statements=1, transactions=1)
        return row


def _park_params(step: Step) -> Params:
    run, o = step.run, step.request
    calls = step.calls
    return (run.tenant_id, run.id, step.usage, step.at, step.text, new_id(),
            [c.id for c in calls], [c.name for c in calls], [c.arguments for c in calls],
            list(step.args), list(step.ids), list(step.event_ids), step.event_base,
            o.topic, o.key, o.value, dict(o.headers))  # fmt: skip


def _record_params(record: Record) -> Params:
    run, o = record.run, record.resume
    done = [s for s in record.settlements if not s.waits]
    results = [_result_row(s) for s in done]
    waits = [_approval_row(s) for s in record.settlements if s.waits]
    audits = [_audit_row(s, record) for s in done]
    return (run.tenant_id, run.id, run.session_id, record.at, record.next_check_at,
            o.topic, o.key, o.value, dict(o.headers),
            *_arrays(results, _RESULT_WIDTH), *_arrays(waits, _APPROVAL_WIDTH),
            *_arrays(audits, _AUDIT_WIDTH), any(a[0] is not None for a in audits))  # fmt: skip


def _result_row(s: Settlement) -> Params:
    c = s.call
    return (c.id, s.status, s.result, s.error, s.output, c.call_id, new_id(), s.event_id)


def _approval_row(s: Settlement) -> Params:
    return (s.call.id, s.call.name, new_id(), s.event_id)


def _audit_row(s: Settlement, record: Record) -> Params:
    entry = s.audit_entry(record.run)
    if entry is None:
        return (None, None, None, None, None)
    audit = AuditRecord(record.run.tenant_id, *entry, created_at=record.at)
    return (audit.body, audit.actor, audit.action, audit.resource, audit.data)


_RESULT_WIDTH, _APPROVAL_WIDTH, _AUDIT_WIDTH = 8, 4, 5


def _arrays(rows: list[Params], width: int) -> list[list[Any]]:
    """Rows as parallel arrays (one per column), for `unnest`."""
    return [[r[k] for r in rows] for k in range(width)]


def _call_of_json(value: dict[str, Any]) -> ToolCall:
    return POSTGRES.tool_call([value[c] for c in TOOL_CALL])
