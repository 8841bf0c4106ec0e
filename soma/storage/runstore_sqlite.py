"""The run store on SQLite: every write is a job of the one writer thread (group commit)."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from soma.bus.outbox import OutboxRecord
from soma.core.errors import ConflictError, NotFoundError
from soma.runs.events import ATTEMPT_SPAN, EventType, RunEvent
from soma.runs.store import (
    Acceptance,
    Claim,
    Claimed,
    Completion,
    Finish,
    NextRequest,
    StatementCounts,
)
from soma.storage.outbox_signal import OutboxSignal
from soma.storage.repositories.agents import Agent
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run
from soma.storage.repositories.sessions import Session
from soma.storage.rows import (
    AGENT,
    MESSAGE,
    RUN,
    SESSION,
    SQLITE,
    columns,
    json_text,
    placeholders,
    sqlite_ts,
)
from soma.storage.sqlite_loop import SqliteLoop, SqliteMetrics
from soma.storage.sqlite_writes import (
    APPEND_MESSAGE,
    add_outbox,
    append_audit,
    append_event,
    message_params,
    one,
)

_RUN = columns(RUN)
_INSERT_REPLY = APPEND_MESSAGE + " ON CONFLICT DO NOTHING"
"""A redelivered completion finds its reply (idempotency key) already there."""
_RESERVE_SEQ = (
    "UPDATE sessions SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq, end_user"
)
_CLAIM = f"""
UPDATE runs SET status = 'running', attempt = attempt + 1, lease_owner = ?,
    lease_expires_at = ?, started_at = COALESCE(started_at, ?)
WHERE tenant_id = ? AND id = ? AND status IN ('queued', 'running')
    AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_at < ?)
    AND NOT EXISTS (SELECT 1 FROM runs AS p WHERE p.session_id = runs.session_id
                    AND p.finished_at IS NULL AND p.seq < runs.seq)
RETURNING {_RUN}"""
_END = f"""
UPDATE runs SET status = ?, usage = COALESCE(?, usage), error = ?, finished_at = ?,
    lease_owner = NULL, lease_expires_at = NULL
WHERE tenant_id = ? AND id = ? AND status IN (SELECT value FROM json_each(?))
RETURNING {_RUN}"""
_INSERT_SESSION = (
    f"INSERT INTO sessions ({columns(SESSION)}, last_seq) "
    f"VALUES ({placeholders(len(SESSION) + 1, 'qmark')})"
)
_RESERVE_SEQS = (
    "UPDATE sessions SET last_seq = last_seq + ? "
    "WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL RETURNING last_seq"
)
"""Numbers an accept's messages (prior ones, then the user's) in a live session."""
_PENDING_OUTBOX = (
    "SELECT id, topic, key, payload, headers FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?"
)
_NEXT_QUEUED = f"""
SELECT {_RUN} FROM runs
WHERE session_id = ? AND tenant_id = ? AND finished_at IS NULL AND status = 'queued'
ORDER BY seq LIMIT 1"""


class SqliteRunStore:
    """Writes are jobs of the writer connection (one transaction per batch of waiting jobs),
    reads go to a read-only connection that never waits for them."""

    def __init__(
        self, path: Path, signal: OutboxSignal, metrics: SqliteMetrics | None = None
    ) -> None:
        self._signal = signal
        self._writer = SqliteLoop(path, write=True, metrics=metrics)
        self._reader = SqliteLoop(path, write=False)

    @property
    def loops(self) -> tuple[SqliteLoop, SqliteLoop]:
        """The writer and the reader, for the store that shares them (the tool store)."""
        return self._writer, self._reader

    @property
    def counts(self) -> StatementCounts:
        """Both connections together (the tool store's jobs too); a job is one trip."""
        w, r = self._writer.counts, self._reader.counts
        return StatementCounts(w.statements + r.statements, w.transactions, w.trips + r.trips)

    async def start(self) -> None:
        await self._writer.start()
        await self._reader.start()

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()

    def exclusive(self) -> AbstractAsyncContextManager[None]:
        """Hold the writer back while another connection of this process writes."""
        return self._writer.exclusive()

    async def accept(self, acceptance: Acceptance) -> Message:
        stored = await self._writer.run(lambda conn: _accept(conn, acceptance))
        if stored.id == acceptance.message.id:
            self._signal.notify()
        return stored

    async def claim(self, claim: Claim) -> Claimed | None:
        tenant_id, run_id = claim.tenant_id, claim.run_id

        def job(conn: sqlite3.Connection) -> Claimed | None:
            at, until = sqlite_ts(claim.now), sqlite_ts(claim.lease_until)
            params = (claim.owner, until, at, tenant_id, run_id, claim.owner, at)
            row = one(conn, _CLAIM, params)
            if row is None:
                return None
            run = SQLITE.run(row)
            if run.attempt - run.steps > claim.max_attempts:
                return Claimed(run, None, [], 0, None)
            started = RunEvent(
                run.attempt * ATTEMPT_SPAN + 1, EventType.STARTED, {"attempt": run.attempt}
            )
            append_event(conn, run_id, tenant_id, started, at)
            # Reserved now (deleted session or not), so the reply never races later questions.
            reply_seq = one(conn, _RESERVE_SEQ, (run.session_id,))
            agent = one(
                conn,
                f"SELECT {columns(AGENT)} FROM agents WHERE tenant_id = ? AND id = ?",
                (tenant_id, run.agent_id),
            )
            history = conn.execute(
                f"SELECT {columns(MESSAGE)} FROM messages WHERE tenant_id = ? AND session_id = ? "
                "ORDER BY seq DESC LIMIT ?",
                (tenant_id, run.session_id, claim.history_limit),
            ).fetchall()
            return Claimed(
                run=run,
                agent=None if agent is None else SQLITE.agent(agent),
                history=[SQLITE.message(m) for m in reversed(history)],
                reply_seq=reply_seq[0],
                started=started,
                user=reply_seq[1],
            )

        return await self._writer.run(job)

    async def complete(self, completion: Completion) -> Run | None:
        def job(conn: sqlite3.Connection) -> Run | None:
            at = sqlite_ts(completion.finished_at)
            run = _end(
                conn,
                completion.tenant_id,
                completion.run_id,
                "completed",
                ("running",),
                usage=completion.usage,
                error=None,
                at=at,
            )
            if run is None:
                return None
            conn.execute(_INSERT_REPLY, message_params(completion.reply))
            for event in completion.events:
                append_event(conn, run.id, run.tenant_id, event, at)
            add_outbox(conn, completion.outbound, at)
            _request_next(conn, run, completion.next_request, at)
            return run

        completed = await self._writer.run(job)
        if completed is not None:
            self._signal.notify()
        return completed

    async def finish(self, finish: Finish) -> Run | None:
        def job(conn: sqlite3.Connection) -> Run | None:
            at = sqlite_ts(finish.finished_at)
            run = _end(
                conn,
                finish.tenant_id,
                finish.run_id,
                finish.status,
                finish.expected,
                usage=None,
                error=finish.error,
                at=at,
            )
            if run is None:
                return None
            append_event(conn, run.id, run.tenant_id, finish.event, at)
            if finish.audit is not None:
                append_audit(conn, finish.audit)
            _request_next(conn, run, finish.next_request, at)
            return run

        finished = await self._writer.run(job)
        if finished is not None:
            self._signal.notify()
        return finished

    async def renew_leases(
        self, owner: str, run_ids: Collection[str], lease_until: datetime
    ) -> set[str]:
        ids = list(run_ids)
        if not ids:
            return set()

        def job(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "UPDATE runs SET lease_expires_at = ? WHERE lease_owner = ? "
                "AND id IN (SELECT value FROM json_each(?)) RETURNING id",
                (sqlite_ts(lease_until), owner, json_text(ids)),
            ).fetchall()
            return {row[0] for row in rows}

        return await self._writer.run(job)

    async def hand_back(self, tenant_id: str, run_id: str, owner: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            row = one(
                conn,
                "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL "
                "WHERE tenant_id = ? AND id = ? AND status = 'running' AND lease_owner = ? "
                "RETURNING id",
                (tenant_id, run_id, owner),
            )
            return row is not None

        return await self._writer.run(job)

    async def fetch_outbox(self, limit: int) -> list[OutboxRecord]:
        def job(conn: sqlite3.Connection) -> list[OutboxRecord]:
            rows = conn.execute(_PENDING_OUTBOX, (limit,)).fetchall()
            return [OutboxRecord(r[0], r[1], r[2], bytes(r[3]), orjson.loads(r[4])) for r in rows]

        return await self._reader.run(job)

    async def count_outbox(self) -> int:
        def job(conn: sqlite3.Connection) -> int:
            row = one(conn, "SELECT count(*) FROM outbox WHERE sent_at IS NULL", ())
            return int(row[0])

        return await self._reader.run(job)

    async def prune_outbox(self, sent_before: datetime, limit: int) -> int:
        def job(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at < ? "
                "ORDER BY id LIMIT ?)",
                (sqlite_ts(sent_before), limit),
            )
            return cursor.rowcount

        return await self._writer.run(job)

    async def mark_outbox_sent(self, ids: Sequence[int], at: datetime) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET sent_at = ? WHERE id IN (SELECT value FROM json_each(?))",
                (sqlite_ts(at), json_text(list(ids))),
            )

        await self._writer.run(job)

    async def session_agent(
        self, tenant_id: str, session_id: str
    ) -> tuple[Session, Agent | None] | None:
        def job(conn: sqlite3.Connection) -> tuple[Session, Agent | None] | None:
            row = one(
                conn,
                f"SELECT {columns(SESSION, 's')}, {columns(AGENT, 'a')} FROM sessions AS s "
                "LEFT JOIN agents AS a ON a.id = s.agent_id AND a.tenant_id = s.tenant_id "
                "WHERE s.tenant_id = ? AND s.id = ? AND s.deleted_at IS NULL",
                (tenant_id, session_id),
            )
            if row is None:
                return None
            agent = None if row[len(SESSION)] is None else SQLITE.agent(row, len(SESSION))
            return SQLITE.session(row), agent

        return await self._reader.run(job)

    async def run_reply(self, tenant_id: str, run_id: str) -> tuple[Run, Message | None] | None:
        def job(conn: sqlite3.Connection) -> tuple[Run, Message | None] | None:
            row = one(
                conn, f"SELECT {_RUN} FROM runs WHERE tenant_id = ? AND id = ?", (tenant_id, run_id)
            )
            if row is None:
                return None
            reply = one(
                conn,
                f"SELECT {columns(MESSAGE)} FROM messages "
                "WHERE tenant_id = ? AND idempotency_key = ?",
                (tenant_id, f"{run_id}:assistant"),
            )
            return SQLITE.run(row), None if reply is None else SQLITE.message(reply)

        return await self._reader.run(job)

    async def events_after(
        self, tenant_id: str, run_id: str, after_id: int, limit: int
    ) -> list[RunEvent]:
        def job(conn: sqlite3.Connection) -> list[RunEvent]:
            rows = conn.execute(
                "SELECT seq, type, data FROM run_events "
                "WHERE tenant_id = ? AND run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (tenant_id, run_id, after_id, limit),
            ).fetchall()
            return [SQLITE.event(row) for row in rows]

        return await self._reader.run(job)


def _accept(conn: sqlite3.Connection, a: Acceptance) -> Message:
    message, run = a.message, a.run
    if message.idempotency_key is not None:
        existing = one(
            conn,
            f"SELECT {columns(MESSAGE)} FROM messages WHERE idempotency_key = ?",
            (message.idempotency_key,),
        )
        if existing is not None:
            return SQLITE.message(existing)
    seq = _number(conn, a)
    if (
        a.reject_if_active
        and a.new_session is None
        and one(
            conn,
            "SELECT 1 FROM runs WHERE session_id = ? AND finished_at IS NULL LIMIT 1",
            (message.session_id,),
        )
    ):
        raise ConflictError(f"session {message.session_id} already has an active run")
    at = sqlite_ts(message.created_at)
    first = seq - len(a.prior)
    written = [*a.prior, message]
    conn.executemany(
        APPEND_MESSAGE, [message_params(replace(m, seq=first + i)) for i, m in enumerate(written)]
    )
    conn.execute(
        "INSERT INTO runs (id, tenant_id, session_id, agent_id, message_id, status, attempt, "
        "created_at, seq) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
        (run.id, run.tenant_id, run.session_id, run.agent_id, message.id, run.status, at, seq),
    )
    append_event(conn, run.id, run.tenant_id, a.queued, at)
    add_outbox(conn, a.request, at)
    append_audit(conn, a.audit)
    return replace(message, seq=seq)


def _number(conn: sqlite3.Connection, a: Acceptance) -> int:
    """Create the new session or reserve numbers in the live one: the user message's seq."""
    count, s = len(a.prior) + 1, a.new_session
    if s is not None:
        conn.execute(_INSERT_SESSION, (s.id, s.tenant_id, s.agent_id, s.title,
                                       json_text(s.metadata), sqlite_ts(s.created_at), s.user,
                                       count))  # fmt: skip
        return count
    row = one(conn, _RESERVE_SEQS, (count, a.message.session_id, a.message.tenant_id))
    if row is None:
        raise NotFoundError(f"session {a.message.session_id} not found")
    seq: int = row[0]
    return seq


def _end(
    conn: sqlite3.Connection,
    tenant_id: str,
    run_id: str,
    status: str,
    expected: Collection[str],
    *,
    usage: dict[str, Any] | None,
    error: str | None,
    at: str | None,
) -> Run | None:
    params = (status, json_text(usage), error, at, tenant_id, run_id, json_text(list(expected)))
    row = one(conn, _END, params)
    return None if row is None else SQLITE.run(row)


def _request_next(conn: sqlite3.Connection, run: Run, build: NextRequest, at: str | None) -> None:
    """The session's next queued run may have been set aside while this one ran."""
    row = one(conn, _NEXT_QUEUED, (run.session_id, run.tenant_id))
    if row is not None:
        add_outbox(conn, build(SQLITE.run(row)), at)
