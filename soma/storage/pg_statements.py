"""The run store's statements on PostgreSQL: one data-modifying CTE per step.

Each statement is one round trip and, alone or batched with `fetchmany`, one transaction.
"""

from __future__ import annotations

from soma.runs.events import ATTEMPT_SPAN
from soma.storage.rows import AGENT, MESSAGE, RUN, columns

_RUN = columns(RUN)
_NEXT_QUEUED = f"""(SELECT row_to_json(n) FROM (SELECT {_RUN} FROM runs
    WHERE runs.tenant_id = u.tenant_id AND runs.session_id = u.session_id AND runs.id <> u.id
    AND runs.finished_at IS NULL AND runs.status = 'queued' ORDER BY runs.seq LIMIT 1) AS n)"""
# (The statement's snapshot still shows `u` as it was, hence `runs.id <> u.id`.)

ACCEPT = f"""
WITH d AS (
    SELECT {columns(MESSAGE)} FROM messages
    WHERE $17::text IS NOT NULL AND idempotency_key = $17
), s AS (
    UPDATE sessions SET last_seq = last_seq + 1
    WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM d)
    RETURNING last_seq
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
)
SELECT $3::text, m.seq, NULL::json FROM m
UNION ALL SELECT $3::text, NULL, row_to_json(d) FROM d"""
# Each row names the accept it answers ($3, the new message's id): its seq, or the message
# stored earlier under the same idempotency key (then nothing was written).

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
    WHERE sessions.id = c.session_id AND c.attempt - c.steps <= $6 RETURNING sessions.last_seq
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
        ORDER BY seq DESC LIMIT $7) AS h)
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
