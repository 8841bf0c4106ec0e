"""The run store on PostgreSQL: asyncpg, one statement per step, concurrent steps batched.

Each step is one data-modifying CTE (`soma.storage.pg_statements`). Accepts and claims that
arrive together go out as one pipelined `fetchmany` (one round trip, one implicit
transaction, one commit); completions share one explicit transaction (they may add a request
for the session's next run).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg

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
from soma.storage.audit_sql import PG_APPEND, PG_LOCK, pg_append_params
from soma.storage.batcher import Batcher
from soma.storage.outbox_signal import OutboxSignal
from soma.storage.pg_pool import IN_FLIGHT, MAX_BATCH, PgPool, settled, translated
from soma.storage.pg_statements import ACCEPT, CLAIM, COMPLETE, FINISH, INSERT_OUTBOX
from soma.storage.repositories.agents import Agent
from soma.storage.repositories.messages import Message
from soma.storage.repositories.runs import Run
from soma.storage.repositories.sessions import Session
from soma.storage.rows import AGENT, MESSAGE, POSTGRES, RUN, SESSION, columns

_N = len(RUN)


class PostgresRunStore:
    """On the shared raw pool (`PgPool`), which it opens and closes."""

    def __init__(self, pg: PgPool, signal: OutboxSignal) -> None:
        self._signal = signal
        self._pg = pg
        self._accepts: Batcher[Acceptance, Message] = Batcher(
            self._accept_many, max_batch=MAX_BATCH, max_in_flight=IN_FLIGHT
        )
        self._claims: Batcher[Claim, Any] = Batcher(
            self._claim_many, max_batch=MAX_BATCH, max_in_flight=IN_FLIGHT
        )
        self._completions: Batcher[Completion, Run | None] = Batcher(
            self._complete_many, max_batch=MAX_BATCH, max_in_flight=IN_FLIGHT
        )

    async def start(self) -> None:
        await self._pg.start()

    async def close(self) -> None:
        await self._pg.close()

    @property
    def _pool(self) -> asyncpg.Pool:
        return self._pg.pool

    @translated
    async def accept(self, acceptance: Acceptance) -> Message:
        # A session created by this accept has no run yet: nothing to look for.
        if acceptance.reject_if_active and acceptance.new_session is None:
            return await self._accept_exclusive(acceptance)
        return await self._accepts.submit(acceptance)

    @translated
    async def claim(self, claim: Claim) -> Claimed | None:
        row = await self._claims.submit(claim)
        if row is None:
            return None
        run = POSTGRES.run(row)
        if run.attempt - run.steps > claim.max_attempts:
            return Claimed(run, None, [], 0, None)
        agent = row[_N + 1]
        history = row[_N + 2] or []
        return Claimed(
            run=run,
            agent=None if agent is None else POSTGRES.agent([agent[c] for c in AGENT]),
            history=[POSTGRES.message([m[c] for c in MESSAGE]) for m in history],
            reply_seq=row[_N],
            user=row[_N + 3],
            started=RunEvent(
                run.attempt * ATTEMPT_SPAN + 1, EventType.STARTED, {"attempt": run.attempt}
            ),
        )

    @translated
    async def complete(self, completion: Completion) -> Run | None:
        return await self._completions.submit(completion)

    @translated
    async def finish(self, finish: Finish) -> Run | None:
        e = finish.event
        params = (finish.tenant_id, finish.run_id, finish.status, finish.error,
                  finish.finished_at, list(finish.expected), e.id, e.type, e.data)  # fmt: skip
        audited = finish.audit is not None
        async with self._pool.acquire() as conn, conn.transaction():
            if audited:
                await conn.execute(PG_LOCK, finish.tenant_id)
            row = await conn.fetchrow(FINISH, *params)
            run = None if row is None else await self._request_next(conn, row, finish)
            if run is not None and finish.audit is not None:
                await conn.execute(PG_APPEND, *pg_append_params(finish.audit))
        trips = (3 if run is None else 4) + audited
        self._count(trips=trips, statements=1, transactions=1)
        if run is not None:
            self._signal.notify()
        return run

    @translated
    async def renew_leases(
        self, owner: str, run_ids: Collection[str], lease_until: datetime
    ) -> set[str]:
        if not run_ids:
            return set()
        rows = await self._pool.fetch(
            "UPDATE runs SET lease_expires_at = $1 WHERE lease_owner = $2 "
            "AND id = ANY($3::text[]) RETURNING id",
            lease_until,
            owner,
            list(run_ids),
        )
        self._count(trips=1, statements=1, transactions=1)
        return {row[0] for row in rows}

    @translated
    async def hand_back(self, tenant_id: str, run_id: str, owner: str) -> bool:
        row = await self._pool.fetchrow(
            "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL "
            "WHERE tenant_id = $1 AND id = $2 AND status = 'running' AND lease_owner = $3 "
            "RETURNING id",
            tenant_id,
            run_id,
            owner,
        )
        return row is not None

    @translated
    async def fetch_outbox(self, limit: int) -> list[OutboxRecord]:
        rows = await self._pool.fetch(
            "SELECT id, topic, key, payload, headers FROM outbox WHERE sent_at IS NULL "
            "ORDER BY id LIMIT $1",
            limit,
        )
        self._count(trips=1, statements=1, transactions=0)
        return [OutboxRecord(r[0], r[1], r[2], bytes(r[3]), dict(r[4])) for r in rows]

    @translated
    async def count_outbox(self) -> int:
        count = await self._pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        self._count(trips=1, statements=1, transactions=0)
        return int(count)

    @translated
    async def prune_outbox(self, sent_before: datetime, limit: int) -> int:
        status = await self._pool.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at < $1 "
            "ORDER BY id LIMIT $2)",
            sent_before,
            limit,
        )
        return int(status.split()[-1])

    @translated
    async def mark_outbox_sent(self, ids: Sequence[int], at: datetime) -> None:
        await self._pool.execute(
            "UPDATE outbox SET sent_at = $1 WHERE id = ANY($2::bigint[])", at, list(ids)
        )
        self._count(trips=1, statements=1, transactions=1)

    @translated
    async def session_agent(
        self, tenant_id: str, session_id: str
    ) -> tuple[Session, Agent | None] | None:
        row = await self._pool.fetchrow(
            f"SELECT {columns(SESSION, 's')}, {columns(AGENT, 'a')} FROM sessions AS s "
            "LEFT JOIN agents AS a ON a.id = s.agent_id AND a.tenant_id = s.tenant_id "
            "WHERE s.tenant_id = $1 AND s.id = $2 AND s.deleted_at IS NULL",
            tenant_id,
            session_id,
        )
        self._count(trips=1, statements=1, transactions=0)
        if row is None:
            return None
        agent = None if row[len(SESSION)] is None else POSTGRES.agent(row, len(SESSION))
        return POSTGRES.session(row), agent

    @translated
    async def run_reply(self, tenant_id: str, run_id: str) -> tuple[Run, Message | None] | None:
        row = await self._pool.fetchrow(
            f"SELECT {columns(RUN, 'r')}, {columns(MESSAGE, 'm')} FROM runs AS r "
            "LEFT JOIN messages AS m ON m.tenant_id = r.tenant_id "
            "AND m.idempotency_key = r.id || ':assistant' "
            "WHERE r.tenant_id = $1 AND r.id = $2",
            tenant_id,
            run_id,
        )
        self._count(trips=1, statements=1, transactions=0)
        if row is None:
            return None
        reply = None if row[_N] is None else POSTGRES.message(row, _N)
        return POSTGRES.run(row), reply

    @translated
    async def events_after(
        self, tenant_id: str, run_id: str, after_id: int, limit: int
    ) -> list[RunEvent]:
        rows = await self._pool.fetch(
            "SELECT seq, type, data FROM run_events "
            "WHERE tenant_id = $1 AND run_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
            tenant_id,
            run_id,
            after_id,
            limit,
        )
        self._count(trips=1, statements=1, transactions=0)
        return [POSTGRES.event(row) for row in rows]

    @translated
    async def _accept_many(self, items: list[Acceptance]) -> Sequence[Message | BaseException]:
        # Tenants' audit heads are locked in one order by every batch: no deadlock.
        ordered = sorted(items, key=lambda a: a.message.tenant_id)
        async with self._pool.acquire() as conn:
            try:
                rows = await conn.fetchmany(ACCEPT, [_accept_params(a) for a in ordered])
            except asyncpg.PostgresError:
                if len(items) == 1:
                    raise
                # One bad item (or a key raced by another batch) must not fail the others:
                # each alone, in its own transaction, now seeing what the others committed.
                return [await settled(self._accept_one(conn, a)) for a in items]
        self._count(trips=1, statements=len(items), transactions=1)
        answers = {row[0]: row for row in rows}
        stored = [_stored(a, answers.get(a.message.id)) for a in items]
        written = zip(stored, items, strict=True)
        if any(isinstance(m, Message) and m.id == a.message.id for m, a in written):
            self._signal.notify()  # this replica's relay need not wait for the NOTIFY
        return stored

    @translated
    async def _accept_one(self, conn: asyncpg.Connection, item: Acceptance) -> Message:
        row = await conn.fetchrow(ACCEPT, *_accept_params(item))
        self._count(trips=1, statements=1, transactions=1)
        stored = _stored(item, row)
        if isinstance(stored, BaseException):
            raise stored
        return stored

    @translated
    async def _accept_exclusive(self, item: Acceptance) -> Message:
        """`reject` agents: lock the session row, then look for an unfinished run."""
        session_id, tenant_id = item.message.session_id, item.message.tenant_id
        async with self._pool.acquire() as conn, conn.transaction():
            # The audit head before the session, the order every accept locks them in.
            await conn.execute(PG_LOCK, tenant_id)
            locked = await conn.fetchrow(
                "SELECT 1 FROM sessions WHERE id = $1 AND tenant_id = $2 "
                "AND deleted_at IS NULL FOR UPDATE",
                session_id,
                tenant_id,
            )
            if locked is None:
                raise _session_missing(item)
            key = item.message.idempotency_key
            earlier = key and await conn.fetchrow(
                f"SELECT {columns(MESSAGE)} FROM messages WHERE idempotency_key = $1", key
            )
            if earlier:
                return POSTGRES.message(earlier)
            if await conn.fetchrow(
                "SELECT 1 FROM runs WHERE session_id = $1 AND finished_at IS NULL LIMIT 1",
                session_id,
            ):
                raise ConflictError(f"session {session_id} already has an active run")
            return await self._accept_one(conn, item)

    @translated
    async def _claim_many(self, items: list[Claim]) -> Sequence[Any]:
        params = [
            (c.tenant_id, c.run_id, c.owner, c.lease_until, c.now, c.max_attempts, c.history_limit)
            for c in items
        ]
        async with self._pool.acquire() as conn:
            rows = await conn.fetchmany(CLAIM, params)
        self._count(trips=1, statements=len(items), transactions=1)
        claimed = {row[0]: row for row in rows}
        return [claimed.get(c.run_id) for c in items]

    @translated
    async def _complete_many(self, items: list[Completion]) -> Sequence[Run | None]:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetchmany(COMPLETE, [_complete_params(c) for c in items])
            done = {row[0]: row for row in rows}
            requests = [
                request
                for item in items
                if (row := done.get(item.run_id)) is not None
                and (request := _next_params(row, item.next_request, item.finished_at)) is not None
            ]
            if requests:
                await conn.executemany(INSERT_OUTBOX, requests)
        self._count(trips=3 + bool(requests), statements=len(items) + len(requests), transactions=1)
        if done:
            self._signal.notify()
        return [POSTGRES.run(done[c.run_id]) if c.run_id in done else None for c in items]

    @translated
    async def _request_next(self, conn: asyncpg.Connection, row: Any, finish: Finish) -> Run:
        request = _next_params(row, finish.next_request, finish.finished_at)
        if request is not None:
            await conn.execute(INSERT_OUTBOX, *request)
        return POSTGRES.run(row)

    @property
    def counts(self) -> StatementCounts:
        """A snapshot of what this store (and the tool store, on the same pool) has cost."""
        return self._pg.counts

    def _count(self, *, trips: int, statements: int, transactions: int) -> None:
        self._pg.count(trips=trips, statements=statements, transactions=transactions)


_OLD_SESSION = (None,) * 5


def _accept_params(a: Acceptance) -> tuple[Any, ...]:
    m, r, q, o, au, s = a.message, a.run, a.queued, a.request, a.audit, a.new_session
    fresh = _OLD_SESSION if s is None else (s.agent_id, s.title, s.metadata, s.created_at, s.user)
    return (m.session_id, m.tenant_id, m.id, r.id, m.role, m.content, m.metadata, m.created_at,
            r.agent_id, q.id, q.type, q.data, o.topic, o.key, o.value, dict(o.headers),
            m.idempotency_key, au.body, au.actor, au.action, au.resource, au.data, *fresh,
            [p.id for p in a.prior], [p.role for p in a.prior],
            [p.content for p in a.prior])  # fmt: skip


def _stored(item: Acceptance, row: Any) -> Message | BaseException:
    """The accept's answer row: the new message numbered, or the one stored under its key."""
    if row is None:
        return _session_missing(item)
    if row[2] is not None:
        return POSTGRES.message([row[2][c] for c in MESSAGE])
    return replace(item.message, seq=row[1])


def _complete_params(c: Completion) -> tuple[Any, ...]:
    m, o = c.reply, c.outbound
    events = [{"id": e.id, "type": e.type, "data": e.data} for e in c.events]
    return (c.tenant_id, c.run_id, c.usage, c.finished_at, m.id, m.role, m.content, m.tool_calls,
            m.metadata, m.seq, m.idempotency_key, events, o.topic, o.key, o.value,
            dict(o.headers))  # fmt: skip


def _next_params(row: Any, build: NextRequest, at: datetime) -> tuple[Any, ...] | None:
    queued = row[_N]
    if queued is None:
        return None
    request = build(POSTGRES.run([queued[c] for c in RUN]))
    return (request.topic, request.key, request.value, dict(request.headers), at)


def _session_missing(item: Acceptance) -> NotFoundError:
    return NotFoundError(f"session {item.message.session_id} not found")
