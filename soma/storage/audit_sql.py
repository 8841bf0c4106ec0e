"""Audit appends as SQL, so a hot-path step chains its audit row without another round trip.

PostgreSQL: the tenant's row in `audit_heads` is updated to the new hash in the same statement
that inserts the entry. An `UPDATE` that waits for a concurrent append re-reads the row it
waited for (the newest head), so appends chain one after another; a plain `SELECT` of the last
entry would read a snapshot taken before the wait and fork the chain. SQLite has one writer:
its appends read the last entry and hash it with `soma_chain_hash`, registered on the
connection.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from soma.storage.audit_chain import GENESIS_HASH, SQLITE_HASH_FUNCTION, AuditRecord, chain_hash

_G = f"'{GENESIS_HASH}'"


def _sha(prev: str, body: str) -> str:
    return f"encode(sha256(convert_to({prev} || E'\\n' || CAST({body} AS text), 'UTF8')), 'hex')"


def pg_head(tenant: str, body: str, where: str = "TRUE") -> str:
    """A CTE body advancing `tenant`'s head by `body` when `where` holds: `RETURNING prev, head`."""
    return f"""INSERT INTO audit_heads AS ah (tenant_id, prev, head)
    SELECT CAST({tenant} AS text), {_G}, {_sha(_G, body)} WHERE {where}
    ON CONFLICT (tenant_id) DO UPDATE SET prev = ah.head, head = {_sha("ah.head", body)}
    RETURNING prev, head"""


def pg_entry(head: str, tenant: str, actor: str, action: str, resource: str, data: str,
             at: str) -> str:  # fmt: skip
    """A CTE body inserting the entry whose hashes the CTE `head` (a `pg_head`) returned."""
    return f"""INSERT INTO audit_log
        (tenant_id, actor, action, resource, data, prev_hash, hash, created_at)
    SELECT CAST({tenant} AS text), CAST({actor} AS text), CAST({action} AS text),
        CAST({resource} AS text), CAST({data} AS jsonb), {head}.prev, {head}.head,
        CAST({at} AS timestamptz)
    FROM {head} RETURNING id, prev_hash, hash"""


def pg_lock(tenant: str, when: str) -> str:
    """A CTE body locking `tenant`'s head when `when` holds: read it first, so the statement
    takes the head before any other row, the order every append locks in."""
    return f"SELECT head FROM audit_heads WHERE {when} AND tenant_id = {tenant} FOR UPDATE"


def pg_chain(tenant: str, lock: str, entries: str, at: str) -> str:
    """CTE parts `ch`, `al`, `hu` appending the CTE `entries` (k = 1..n, body, actor, action,
    resource, data) after the head the CTE `lock` (a `pg_lock`) holds; needs WITH RECURSIVE.

    The head row exists: every tenant's first entry is an accepted message's.
    """
    return f"""ch(k, prev, hash) AS (
    SELECT CAST(0 AS bigint), CAST(NULL AS text), COALESCE((SELECT head FROM {lock}), {_G})
    WHERE EXISTS (SELECT 1 FROM {entries})
    UNION ALL
    SELECT ch.k + 1, ch.hash, {_sha("ch.hash", "en.body")}
    FROM ch JOIN {entries} AS en ON en.k = ch.k + 1
), al AS (
    INSERT INTO audit_log (tenant_id, actor, action, resource, data, prev_hash, hash, created_at)
    SELECT CAST({tenant} AS text), en.actor, en.action, en.resource, en.data, ch.prev, ch.hash,
        CAST({at} AS timestamptz)
    FROM ch JOIN {entries} AS en ON en.k = ch.k ORDER BY ch.k
), hu AS (
    INSERT INTO audit_heads AS ah (tenant_id, prev, head)
    SELECT CAST({tenant} AS text), prev, hash FROM ch WHERE k > 0 ORDER BY k DESC LIMIT 1
    ON CONFLICT (tenant_id) DO UPDATE SET prev = excluded.prev, head = excluded.head
)"""


PG_LOCK = pg_lock("$1", "TRUE")
"""Lock a tenant's head before the rows an action changes: every append locks in that order."""

PG_APPEND = f"""WITH h AS ({pg_head("$1", "$2")})
{pg_entry("h", "$1", "$3", "$4", "$5", "$6", "$7")}"""
"""One entry on its own (asyncpg): see `pg_append_params`."""


def pg_append_params(r: AuditRecord) -> tuple[Any, ...]:
    return (r.tenant_id, r.body, r.actor, r.action, r.resource, r.data, r.created_at)


SQLITE_APPEND = f"""
INSERT INTO audit_log (tenant_id, actor, action, resource, data, prev_hash, hash, created_at)
SELECT ?1, ?2, ?3, ?4, ?5, p.h, {SQLITE_HASH_FUNCTION}(p.h, ?6), ?7
FROM (SELECT COALESCE((SELECT hash FROM audit_log WHERE tenant_id = ?1 ORDER BY id DESC LIMIT 1),
                      {_G}) AS h) AS p"""
"""One entry: (?1 tenant, ?2 actor, ?3 action, ?4 resource, ?5 data, ?6 body, ?7 at)."""


def register_chain_hash(conn: sqlite3.Connection) -> None:
    conn.create_function(SQLITE_HASH_FUNCTION, 2, chain_hash, deterministic=True)
