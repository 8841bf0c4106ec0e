"""The tool store on SQLite: each write one job of the run store's writer (group commit),
each read one job of its reader."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from soma.core.errors import ConflictError, NotFoundError
from soma.core.ids import new_id
from soma.runs.tool_store import (
    RESULT_FROM,
    Loaded,
    Parked,
    Record,
    Recorded,
    Settlement,
    Step,
)
from soma.storage.audit_chain import AuditRecord
from soma.storage.outbox_signal import OutboxSignal
from soma.storage.repositories.runs import Run
from soma.storage.repositories.tool_calls import UNFINISHED, ToolCall
from soma.storage.rows import (
    AGENT,
    RUN,
    SQLITE,
    TOOL_CALL,
    columns,
    in_list,
    json_text,
    sqlite_ts,
)
from soma.storage.sqlite_loop import SqliteLoop
from soma.storage.sqlite_writes import (
    APPEND_MESSAGE,
    NEXT_SEQ,
    add_outbox,
    append_audit,
    append_event,
    one,
)

_CALL = columns(TOOL_CALL)
_PARK = f"""
UPDATE runs SET status = 'awaiting_tools', steps = steps + 1, usage = ?,
    lease_owner = NULL, lease_expires_at = NULL
WHERE tenant_id = ? AND id = ? AND status = 'running'
RETURNING {columns(RUN)}"""
_INSERT_CALL = (
    "INSERT INTO tool_calls (id, tenant_id, run_id, session_id, call_id, name, args, status, "
    "created_at, position, event_base) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?) "
    "ON CONFLICT (run_id, call_id) DO NOTHING"
)
_LOAD = f"""
SELECT {columns(RUN, "r")}, {columns(AGENT, "a")} FROM runs AS r
LEFT JOIN agents AS a ON a.tenant_id = r.tenant_id AND a.id = r.agent_id
WHERE r.tenant_id = ? AND r.id = ?"""
_CALLS = f"""
SELECT {_CALL} FROM tool_calls
WHERE tenant_id = ? AND id IN (SELECT value FROM json_each(?))"""
_START = f"""
UPDATE tool_calls SET status = 'running', started_at = ?
WHERE tenant_id = ? AND id = ? AND status IN (SELECT value FROM json_each(?))
RETURNING {_CALL}"""
_RESTART = f"""
UPDATE tool_calls SET started_at = ?
WHERE tenant_id = ? AND id = ? AND status = 'running' AND started_at < ?
RETURNING {_CALL}"""
_RESULT = f"""
UPDATE tool_calls SET status = ?, result = ?, error = ?, finished_at = ?
WHERE tenant_id = ? AND id = ? AND status IN {in_list(RESULT_FROM)}
RETURNING id"""
_APPROVAL = (
    "INSERT INTO approvals (id, tenant_id, run_id, tool_call_id, status, created_at) "
    "VALUES (?, ?, ?, ?, 'pending', ?) ON CONFLICT (tool_call_id) DO NOTHING RETURNING id"
)
_AWAIT_APPROVAL = (
    "UPDATE tool_calls SET status = 'awaiting_approval', approval_id = ? "
    "WHERE tenant_id = ? AND id = ?"
)
_LEFT = f"""SELECT 1 FROM tool_calls WHERE tenant_id = runs.tenant_id AND run_id = runs.id
    AND status IN {in_list(UNFINISHED)}"""
_SETTLE = f"""
UPDATE runs SET
    status = CASE WHEN NOT EXISTS ({_LEFT}) THEN 'queued'
        WHEN EXISTS ({_LEFT} AND status = 'awaiting_approval') THEN 'awaiting_approval'
        ELSE 'awaiting_tools' END,
    lease_owner = CASE WHEN EXISTS ({_LEFT}) THEN lease_owner END,
    lease_expires_at = CASE WHEN EXISTS ({_LEFT}) THEN lease_expires_at ELSE ? END
WHERE tenant_id = ? AND id = ? AND status IN ('awaiting_tools', 'awaiting_approval')
RETURNING status"""
"""Queued again when no call of the run is left without a result (the resume message goes
with it); otherwise it says what it waits for."""


class SqliteToolStore:
    """Writes on the run store's writer, reads on its reader (`SqliteRunStore.loops`)."""

    def __init__(self, loops: tuple[SqliteLoop, SqliteLoop], signal: OutboxSignal) -> None:
        self._writer, self._reader = loops
        self._signal = signal

    async def park(self, step: Step) -> Parked | None:
        parked = await self._writer.run(lambda conn: _park(conn, step))
        if parked is not None:
            self._signal.notify()
        return parked

    async def load(self, tenant_id: str, run_id: str, call_ids: Sequence[str]) -> Loaded | None:
        def job(conn: sqlite3.Connection) -> Loaded | None:
            row = one(conn, _LOAD, (tenant_id, run_id))
            if row is None:
                return None
            agent = None if row[len(RUN)] is None else SQLITE.agent(row, len(RUN))
            found: dict[str, ToolCall] = {}
            if call_ids:
                rows = conn.execute(_CALLS, (tenant_id, json_text(list(call_ids)))).fetchall()
                found = {call.id: call for call in map(SQLITE.tool_call, rows)}
            return Loaded(SQLITE.run(row), agent, [found[i] for i in call_ids if i in found])

        return await self._reader.run(job)

    async def start(
        self, tenant_id: str, call_id: str, now: datetime, from_statuses: Collection[str]
    ) -> ToolCall | None:
        params = (sqlite_ts(now), tenant_id, call_id, json_text(list(from_statuses)))
        return await self._writer.run(lambda conn: _call(conn, _START, params))

    async def restart(
        self, tenant_id: str, call_id: str, now: datetime, started_before: datetime
    ) -> ToolCall | None:
        params = (sqlite_ts(now), tenant_id, call_id, sqlite_ts(started_before))
        return await self._writer.run(lambda conn: _call(conn, _RESTART, params))

    async def record(self, record: Record) -> Recorded:
        recorded = await self._writer.run(lambda conn: _record(conn, record))
        if recorded.resumed:
            self._signal.notify()
        return recorded


def _park(conn: sqlite3.Connection, step: Step) -> Parked | None:
    run, at = step.run, sqlite_ts(step.at)
    row = one(conn, _PARK, (json_text(step.usage), run.tenant_id, run.id))
    if row is None:
        return None
    parked = SQLITE.run(row)
    steps = parked.steps
    calls = step.named(steps)
    wire = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]
    _append_message(conn, run, "assistant", step.text, wire, None, step.key(steps), at)
    base = step.event_base
    rows = [
        (i, run.tenant_id, run.id, run.session_id, c.id, c.name, json_text(a), at, p, base)
        for p, (i, c, a) in enumerate(zip(step.ids, calls, step.args, strict=True))
    ]
    conn.executemany(_INSERT_CALL, rows)
    events = step.events(steps)
    for event in events:
        append_event(conn, run.id, run.tenant_id, event, at)
    add_outbox(conn, step.request, at)
    return Parked(parked, events)


def _record(conn: sqlite3.Connection, record: Record) -> Recorded:
    run, at = record.run, sqlite_ts(record.at)
    events = []
    for settled in record.settlements:
        if settled.waits:
            event = settled.approval_event(_await_approval(conn, record, settled, at))
        elif one(conn, _RESULT, _result_params(settled, run.tenant_id, at)) is None:
            continue  # recorded already (a redelivery raced this one)
        else:
            call = settled.call
            key = f"{call.id}:result"
            _append_message(conn, run, "tool", settled.output, None, call.call_id, key, at)
            entry = settled.audit_entry(run)
            if entry is not None:
                append_audit(conn, AuditRecord(run.tenant_id, *entry, created_at=record.at))
            event = settled.result_event()
        append_event(conn, run.id, run.tenant_id, event, at)
        events.append(event)
    events.sort(key=lambda e: e.id)
    settled_run = one(conn, _SETTLE, (sqlite_ts(record.next_check_at), run.tenant_id, run.id))
    resumed = settled_run is not None and settled_run[0] == "queued"
    if resumed:
        add_outbox(conn, record.resume, at)
    return Recorded(events, resumed)


def _await_approval(
    conn: sqlite3.Connection, record: Record, settled: Settlement, at: str | None
) -> str:
    """The call's approval (created once per call), the call parked on it; the approval id."""
    tenant_id, call_id = record.run.tenant_id, settled.call.id
    row = one(conn, _APPROVAL, (new_id(), tenant_id, record.run.id, call_id, at))
    if row is None:
        row = one(
            conn,
            "SELECT id FROM approvals WHERE tenant_id = ? AND tool_call_id = ?",
            (tenant_id, call_id),
        )
        if row is None:
            raise ConflictError("approval belongs to another tenant")
    approval_id: str = row[0]
    conn.execute(_AWAIT_APPROVAL, (approval_id, tenant_id, call_id))
    return approval_id


def _result_params(settled: Settlement, tenant_id: str, at: str | None) -> tuple[object, ...]:
    return (settled.status, json_text(settled.result), settled.error, at, tenant_id,
            settled.call.id)  # fmt: skip


def _append_message(
    conn: sqlite3.Connection,
    run: Run,
    role: str,
    content: str,
    tool_calls: list[dict[str, Any]] | None,
    tool_call_id: str | None,
    key: str,
    at: str | None,
) -> None:
    """A message of the run, numbered next in its (live) session; NotFoundError otherwise.

    Its key is new by construction (a step's number and a call's result are written once),
    so no lookup precedes it: the unique index is the guard.
    """
    row = one(conn, NEXT_SEQ, (run.session_id, run.tenant_id))
    if row is None:
        raise NotFoundError(f"session {run.session_id} not found")
    calls = json_text(tool_calls)
    params = (new_id(), run.tenant_id, run.session_id, run.id, role, content, calls,
              tool_call_id, "{}", row[0], key, at)  # fmt: skip
    conn.execute(APPEND_MESSAGE, params)


def _call(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> ToolCall | None:
    row = one(conn, sql, params)
    return None if row is None else SQLITE.tool_call(row)
