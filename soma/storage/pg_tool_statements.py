"""The tool store's statements on PostgreSQL: one statement per step of the tool branch.

Each write is one data-modifying CTE; its last parameter names the item it answers, so that
concurrent ones go out together (`fetchmany`: one round trip, one transaction). Sibling parts
of a CTE all see the snapshot the statement started from, hence the explicit overlays below.
"""

from __future__ import annotations

from soma.runs.tool_store import CALL_ID_LENGTH, RESULT_FROM
from soma.storage.audit_sql import pg_chain, pg_lock
from soma.storage.repositories.tool_calls import UNFINISHED
from soma.storage.rows import AGENT, MESSAGE, RUN, TOOL_CALL, columns, in_list

_RUN = columns(RUN)
_CALL = columns(TOOL_CALL)
_LIVE_SESSION = """EXISTS (SELECT 1 FROM sessions WHERE sessions.id = {session}
    AND sessions.tenant_id = $1 AND sessions.deleted_at IS NULL)"""

PARK = f"""
WITH u AS (
    UPDATE runs SET status = 'awaiting_tools', steps = steps + 1, usage = $3,
        lease_owner = NULL, lease_expires_at = NULL
    WHERE tenant_id = $1 AND id = $2 AND status = 'running'
        AND {_LIVE_SESSION.format(session="runs.session_id")}
    RETURNING {_RUN}
), c AS (
    SELECT x.n - 1 AS i, x.tid, x.name, x.arguments, x.args, x.eid,
        left('s' || u.steps || '.' || (x.n - 1) || '.' || x.id, {CALL_ID_LENGTH}) AS call_id
    FROM u, unnest($7::text[], $8::text[], $9::text[], $10::jsonb[], $11::text[], $12::bigint[])
        WITH ORDINALITY AS x(id, name, arguments, args, tid, eid, n)
), s AS (
    UPDATE sessions SET last_seq = last_seq + 1 FROM u
    WHERE sessions.id = u.session_id RETURNING sessions.last_seq
), m AS (
    INSERT INTO messages ({columns(MESSAGE)})
    SELECT $6, $1, u.session_id, $2, 'assistant', $5,
        (SELECT jsonb_agg(jsonb_build_object('id', c.call_id, 'type', 'function', 'function',
            jsonb_build_object('name', c.name, 'arguments', c.arguments)) ORDER BY c.i) FROM c),
        NULL, '{{}}'::jsonb, s.last_seq, $2 || ':step:' || u.steps, $4
    FROM u, s
), t AS (
    INSERT INTO tool_calls (id, tenant_id, run_id, session_id, call_id, name, args, status,
                            created_at, position, event_base)
    SELECT c.tid, $1, $2, u.session_id, c.call_id, c.name, c.args, 'pending', $4, c.i, $13
    FROM u, c ON CONFLICT (run_id, call_id) DO NOTHING
), e AS (
    INSERT INTO run_events (run_id, seq, tenant_id, type, data, created_at)
    SELECT $2, c.eid, $1, 'tool.call', jsonb_build_object('id', c.tid, 'call_id', c.call_id,
        'name', c.name, 'args', c.args), $4
    FROM c ON CONFLICT DO NOTHING
), o AS (
    INSERT INTO outbox (topic, key, payload, headers, created_at)
    SELECT $14, $15, $16, $17, $4 FROM u
)
SELECT $18::int, u.*, false FROM u
UNION ALL
SELECT $18::int, {", ".join(["NULL"] * len(RUN))}, true FROM runs
WHERE NOT EXISTS (SELECT 1 FROM u) AND tenant_id = $1 AND id = $2 AND status = 'running'
    AND NOT {_LIVE_SESSION.format(session="runs.session_id")}"""
# The step's number is the run's new `steps`, known only inside the statement: call ids and
# the message's key are built here as `Step.named` and `Step.key` build them. The last
# column says the run is still running but its session is gone (nothing was written).

LOAD = f"""
SELECT {columns(RUN, "r")}, {columns(AGENT, "a")},
    (SELECT json_agg(c) FROM (SELECT {_CALL} FROM tool_calls
        WHERE tenant_id = $1 AND id = ANY($3::text[])) AS c)
FROM runs AS r LEFT JOIN agents AS a ON a.tenant_id = r.tenant_id AND a.id = r.agent_id
WHERE r.tenant_id = $1 AND r.id = $2"""

START = f"""
UPDATE tool_calls SET status = 'running', started_at = $3
WHERE tenant_id = $1 AND id = $2 AND status = ANY($4::text[])
RETURNING $5::int, {_CALL}"""

RESTART = f"""
UPDATE tool_calls SET started_at = $3
WHERE tenant_id = $1 AND id = $2 AND status = 'running' AND started_at < $4
RETURNING {_CALL}"""

RECORD = f"""
WITH RECURSIVE hl AS (
    {pg_lock("$1", "$27")}
), x AS (
    SELECT * FROM unnest($10::text[], $11::text[], $12::jsonb[], $13::text[], $14::text[],
                         $15::text[], $16::text[], $17::bigint[])
        WITH ORDINALITY AS x(id, status, result, error, output, call_id, message_id, eid, n)
), y AS (
    SELECT * FROM unnest($22::text[], $23::text[], $24::text[], $25::text[], $26::jsonb[])
        WITH ORDINALITY AS y(body, actor, action, resource, data, n)
), a AS (
    SELECT * FROM unnest($18::text[], $19::text[], $20::text[], $21::bigint[])
        AS a(id, name, approval_id, eid)
), ok AS (
    SELECT {_LIVE_SESSION.format(session="$3")} OR NOT EXISTS (
        SELECT 1 FROM tool_calls AS t JOIN x ON t.id = x.id
        WHERE t.tenant_id = $1 AND t.status IN {in_list(RESULT_FROM)}) AS ok
    FROM (SELECT count(*) FROM hl) AS locked
), r AS (
    UPDATE tool_calls AS t SET status = x.status, result = x.result, error = x.error,
        finished_at = $4
    FROM x, ok WHERE ok.ok AND t.tenant_id = $1 AND t.id = x.id
        AND t.status IN {in_list(RESULT_FROM)}
    RETURNING t.id, x.status, x.output, x.call_id, x.message_id, x.eid, x.n
), ai AS (
    INSERT INTO approvals (id, tenant_id, run_id, tool_call_id, status, created_at)
    SELECT a.approval_id, $1, $2, a.id, 'pending', $4 FROM a, ok WHERE ok.ok
    ON CONFLICT (tool_call_id) DO NOTHING RETURNING tool_call_id, id
), ap AS (
    SELECT tool_call_id, id FROM ai
    UNION ALL
    SELECT p.tool_call_id, p.id FROM approvals AS p, ok
    WHERE ok.ok AND p.tenant_id = $1 AND p.tool_call_id IN (SELECT id FROM a)
), w AS (
    UPDATE tool_calls AS t SET status = 'awaiting_approval', approval_id = ap.id
    FROM ap WHERE t.tenant_id = $1 AND t.id = ap.tool_call_id
    RETURNING t.id, t.run_id
), s AS (
    UPDATE sessions SET last_seq = last_seq + (SELECT count(*) FROM r)
    WHERE id = $3 AND tenant_id = $1 AND EXISTS (SELECT 1 FROM r) RETURNING last_seq
), m AS (
    INSERT INTO messages ({columns(MESSAGE)})
    SELECT r.message_id, $1, $3, $2, 'tool', r.output, NULL, r.call_id, '{{}}'::jsonb,
        s.last_seq - (SELECT count(*) FROM r) + row_number() OVER (ORDER BY r.n),
        r.id || ':result', $4
    FROM r, s
), e AS (
    INSERT INTO run_events (run_id, seq, tenant_id, type, data, created_at)
    SELECT $2, r.eid, $1, 'tool.result',
        jsonb_build_object('id', r.id, 'status', r.status, 'output', r.output), $4 FROM r
    UNION ALL
    SELECT $2, a.eid, $1, 'tool.approval_required',
        jsonb_build_object('approval_id', ap.id, 'id', a.id, 'name', a.name), $4
    FROM a JOIN ap ON ap.tool_call_id = a.id
    ON CONFLICT DO NOTHING
), n AS (
    SELECT t.status FROM tool_calls AS t
    WHERE t.tenant_id = $1 AND t.run_id = $2 AND t.status IN {in_list(UNFINISHED)}
        AND t.id NOT IN (SELECT id FROM r) AND t.id NOT IN (SELECT id FROM w)
    UNION ALL SELECT 'awaiting_approval' FROM w WHERE w.run_id = $2
), q AS (
    UPDATE runs SET
        status = CASE WHEN NOT EXISTS (SELECT 1 FROM n) THEN 'queued'
            WHEN EXISTS (SELECT 1 FROM n WHERE n.status = 'awaiting_approval')
                THEN 'awaiting_approval'
            ELSE 'awaiting_tools' END,
        lease_owner = CASE WHEN EXISTS (SELECT 1 FROM n) THEN lease_owner END,
        lease_expires_at = CASE WHEN EXISTS (SELECT 1 FROM n) THEN lease_expires_at ELSE $5 END
    FROM ok WHERE ok.ok AND tenant_id = $1 AND id = $2
        AND status IN ('awaiting_tools', 'awaiting_approval')
    RETURNING runs.status
), o AS (
    INSERT INTO outbox (topic, key, payload, headers, created_at)
    SELECT $6, $7, $8, $9, $4 FROM q WHERE q.status = 'queued'
), au AS (
    SELECT row_number() OVER (ORDER BY r.n) AS k, y.body, y.actor, y.action, y.resource, y.data
    FROM r JOIN y ON y.n = r.n WHERE y.body IS NOT NULL
), {pg_chain("$1", "hl", "au", "$4")}
SELECT $28::int, (SELECT ok FROM ok), (SELECT status FROM q),
    ARRAY(SELECT id FROM r), ARRAY(SELECT tool_call_id FROM ap), ARRAY(SELECT id FROM ap)"""
# Results (x) and approvals (a) come as parallel arrays, in the order they were settled (the
# tool messages are numbered in that order). `ok`: nothing is written when a result is due and
# the session is gone. `n` is what the run still waits for once this statement's updates are
# in (the snapshot, overlaid with `r` and `w`). Results written here are audited (`au`, in
# the order settled) after the tenant's audit head, which `ok` locks before any other row.
