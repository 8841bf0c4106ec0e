"""The run store's statements on PostgreSQL: one data-modifying CTE per step.

Each statement is one round trip and, alone or batched with `fetchmany`, one transaction.
"""

from __future__ import annotations

from soma.runs.events import ATTEMPT_SPAN
from soma.storage.audit_sql import pg_entry, pg_head
from soma.storage.rows import AGENT, MESSAGE, RUN, SESSION, columns

_RUN = columns(RUN)
_NEXT_QUEUED = f"""(SELECT row_to_json(n) FROM (SELECT {_RUN} FROM runs
    WHERE runs.tenant_id = u.tenant_id AND runs.session_id = u.session_id AND runs.id <> u.id
    AND runs.finished_at IS NULL AND runs.status = 'queued' ORDER BY runs.seq LIMIT 1) AS n)"""
# (The statement's snapshot still shows `u` as it was, hence `runs.id <> u.id`.)

_FRESH = "$23::text IS NOT NULL"
"""The accept creates its session ($23, the new session's agent, is set only then)."""
_LIVE_SESSION = f"""NOT EXISTS (SELECT 1 FROM d) AND ({_FRESH} OR EXISTS (SELECT 1 FROM sessions
        WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL))"""
_COUNT = "(cardinality($28::text[]) + 1)"
"""Numbers the accept takes: its prior messages ($28 ids, $29 roles, $30 contents), its own."""
ACCEPT = f"""
WITH d AS (
    SELECT {columns(MESSAGE)} FROM messages
    WHERE $17::text IS NOT NULL AND idempotency_key = $17
), h AS (
    {pg_head("$2", "$18", _LIVE_SESSION)}
), n AS (
    INSERT INTO sessions ({columns(SESSION)}, last_seq)
    SELECT $1, $2, $23, $24, $25, $26, $27, {_COUNT} FROM h WHERE {_FRESH}
    RETURNING last_seq
), u AS (
    UPDATE sessions SET last_seq = last_seq + {_COUNT}
    WHERE NOT ({_FRESH}) AND id = $1 AND tenant_id = $2 AND deleted_at IS NULL
        AND EXISTS (SELECT 1 FROM h)
    RETURNING last_seq
), s AS (
    SELECT last_seq FROM n UNION ALL SELECT last_seq FROM u
), p AS (
    INSERT INTO messages ({columns(MESSAGE)})
    SELECT x.id, $2, $1, NULL, x.role, x.content, NULL, NULL, '{{}}'::jsonb,
        s.last_seq - {_COUNT} + x.i, NULL, $8
    FROM s, unnest($28::text[], $29::text[], $30::text[]) WITH ORDINALITY AS x(id, role, content, i)
), m AS (
    INSERT INTO messages ({columns(MESSAGE)})
    SELECT $3, $2, $1, $4, $5, $6, NULL, NULL, $7, s.last_seq, $17, $8 FROM s
    RETURNING id, seq
), r AS (
    INSERT INTO runs (id, tenant_id, session_id, agent_id, message_id, status, attempt,
                      created_at, seq)
    SELECT $4, $2, $1, $9, m.id, 'queued', 0, $8, m.seq FROM m RETURNING id
), e AS (
    INSERT INTO run_events (run_id, seq, tenant_id, type, data, created_at)
    SELECT r.id, $10, $2, $11, $12, $8 FROM r
), o AS (
    INSERT INTO outbox (topic, key, payload, headers, created_at)
    SELECT $13, $14, $15, $16, $8 FROM r
), a AS (
    {pg_entry("h", "$2", "$19", "$20", "$21", "$22", "$8")}
)
SELECT $3::text, m.seq, NULL::json FROM m
UNION ALL SELECT $3::text, NULL, row_to_json(d) FROM d"""
# Each row names the accept it answers ($3, the new message's id): its seq, or the message
# stored earlier under the same idempotency key (then nothing was written). The tenant's audit
# head is taken first (`n` and `u` wait for `h`), so accepts lock in one order: head, then
# session. A session deleted between the two still leaves its `message.accept` entry: the
# chain never has a gap. A new session ($23 and on: agent, title, metadata, created_at, end
# user) is inserted already numbered: the other parts share the statement's snapshot, in which
# its row does not exist yet, so they take its number from `s` and its id from $1. Prior
# messages take the numbers just before the user message's, in the order given.

CLAIM = f"""
WITH c AS (
    UPDATE runs SET status = 'running', attempt = attempt + 1, lease_owner = $3,
        lease_expires_at = $4, started_at = COALESCE(started_at, $5)
    WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running')
        AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires_at < $5)
        AND NOT EXISTS (SELECT 1 FROM runs AS p WHERE p.session_id = runs.session_id
                        AND p.finished_at IS NULL AND p.seq < runs.seq)
    RETURNING {_RUN}
), s AS (
    UPDATE sessions SET last_seq = last_seq + 1 FROM c
    WHERE sessions.id = c.session_id AND c.attempt - c.steps <= $6
    RETURNING sessions.last_seq, sessions.end_user
), e AS (
    INSERT INTO run_events (run_id, seq, tenant_id, type, data, created_at)
    SELECT c.id, c.attempt * {ATTEMPT_SPAN} + 1, c.tenant_id, 'run.started',
        jsonb_build_object('attempt', c.attempt), $5
    FROM c WHERE c.attempt - c.steps <= $6 ON CONFLICT DO NOTHING
)
SELECT c.*, (SELECT last_seq FROM s),
    (SELECT row_to_json(a) FROM (SELECT {columns(AGENT)} FROM agents
        WHERE agents.tenant_id = c.tenant_id AND agents.id = c.agent_id) AS a),
    (SELECT json_agg(h ORDER BY h.seq) FROM (SELECT {columns(MESSAGE)} FROM messages
        WHERE messages.tenant_id = c.tenant_id AND messages.session_id = c.session_id
        ORDER BY seq DESC LIMIT $7) AS h),
    (SELECT end_user FROM s)
FROM c"""

COMPLETE = f"""
WITH u AS (
    UPDATE runs SET status = 'completed', usage = $3, error = NULL, finished_at = $4,
        lease_owner = NULL, lease_expires_at = NULL
    WHERE tenant_id = $1 AND id = $2 AND status = 'running' RETURNING {_RUN}
), m AS (
    INSERT INTO messages ({columns(MESSAGE)})
    SELECT $5, $1, u.session_id, $2, $6, $7, $8, NULL, $9, $10, $11, $4 FROM u
    ON CONFLICT DO NOTHING
), e AS (
    INSERT INTO run_events (run_id, seq, tenant_id, type, data, created_at)
    SELECT u.id, (x->>'id')::int, u.tenant_id, x->>'type', x->'data', $4
    FROM u, jsonb_array_elements($12::jsonb) AS x ON CONFLICT DO NOTHING
), o AS (
    INSERT INTO outbox (topic, key, payload, headers, created_at)
    SELECT $13, $14, $15, $16, $4 FROM u
)
SELECT u.*, {_NEXT_QUEUED} FROM u"""

FINISH = f"""
WITH u AS (
    UPDATE runs SET status = $3, error = $4, finished_at = $5,
        lease_owner = NULL, lease_expires_at = NULL
    WHERE tenant_id = $1 AND id = $2 AND status = ANY($6::text[]) RETURNING {_RUN}
), e AS (
    INSERT INTO run_events (run_id, seq, tenant_id, type, data, created_at)
    SELECT u.id, $7, u.tenant_id, $8, $9, $5 FROM u ON CONFLICT DO NOTHING
)
SELECT u.*, {_NEXT_QUEUED} FROM u"""

INSERT_OUTBOX = (
    "INSERT INTO outbox (topic, key, payload, headers, created_at) VALUES ($1, $2, $3, $4, $5)"
)
