"""The audit log: append-only, hash-chained per tenant, verifiable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, insert, select, text
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from soma.core.errors import NotFoundError
from soma.storage.audit_chain import GENESIS_HASH, AuditRecord, chain_hash, entry_hash
from soma.storage.audit_sql import pg_entry, pg_head, pg_lock
from soma.storage.repositories.base import Page, Repository, fetch_page, parse_int_cursor
from soma.storage.tables import audit_log, tenants
from soma.storage.types import UTCDateTime, json_type

_VERIFY_BATCH = 500
_PG_LOCK = text(pg_lock(":tenant", "TRUE"))
_PG_APPEND = text(
    f"WITH h AS ({pg_head(':tenant', ':body')}) "
    + pg_entry("h", ":tenant", ":actor", ":action", ":resource", ":data", ":at")
).bindparams(bindparam("data", type_=json_type()), bindparam("at", type_=UTCDateTime()))


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    tenant_id: str
    actor: str
    action: str
    resource: str
    data: dict[str, Any]
    prev_hash: str
    hash: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AuditVerification:
    ok: bool
    checked: int
    first_bad_id: int | None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Entries of one action, actor, resource or time range (`since` inclusive)."""

    action: str | None = None
    actor: str | None = None
    resource: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        c = audit_log.c
        for column, value in ((c.action, self.action), (c.actor, self.actor),
                              (c.resource, self.resource)):  # fmt: skip
            if value is not None:
                query = query.where(column == value)
        if self.since is not None:
            query = query.where(c.created_at >= self.since)
        if self.until is not None:
            query = query.where(c.created_at < self.until)
        return query


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        tenant_id=row.tenant_id,
        actor=row.actor,
        action=row.action,
        resource=row.resource,
        data=dict(row.data),
        prev_hash=row.prev_hash,
        hash=row.hash,
        created_at=row.created_at,
    )


def _recorded(record: AuditRecord, entry_id: int, prev_hash: str, digest: str) -> AuditEntry:
    return AuditEntry(
        id=entry_id,
        tenant_id=record.tenant_id,
        actor=record.actor,
        action=record.action,
        resource=record.resource,
        data=dict(record.data),
        prev_hash=prev_hash,
        hash=digest,
        created_at=record.created_at,
    )


def _expected_hash(entry: AuditEntry, prev_hash: str) -> str:
    return entry_hash(
        prev_hash,
        tenant_id=entry.tenant_id,
        actor=entry.actor,
        action=entry.action,
        resource=entry.resource,
        data=entry.data,
        created_at=entry.created_at,
    )


class AuditRepository(Repository):
    __slots__ = ()

    async def append(
        self, tenant_id: str, *, actor: str, action: str, resource: str, data: dict[str, Any]
    ) -> AuditEntry:
        """Chain a new entry after the tenant's last one; NotFoundError for an unknown tenant."""
        record = AuditRecord(tenant_id, actor, action, resource, dict(data))
        return await self.record(record)

    async def hold(self, tenant_id: str) -> None:
        """Lock the tenant's chain before an action changes other rows: every append locks
        its head first, so actions that write together never wait on each other in a cycle."""
        if self._conn.dialect.name == "postgresql":
            await self._conn.execute(_PG_LOCK, {"tenant": tenant_id})
        # SQLite: the writer's transaction already holds the database's one write lock.

    async def record(self, record: AuditRecord) -> AuditEntry:
        """Chain `record` in this unit of work's transaction (the action's own)."""
        if self._conn.dialect.name == "postgresql":
            return await self._record_postgres(record)
        tenant_id = record.tenant_id
        # SQLite: the writer's transaction holds the database's one write lock.
        known = select(tenants.c.id).where(tenants.c.id == tenant_id)
        if (await self._conn.execute(known)).first() is None:
            raise NotFoundError(f"tenant {tenant_id} not found")
        last = (
            select(audit_log.c.hash)
            .where(audit_log.c.tenant_id == tenant_id)
            .order_by(audit_log.c.id.desc())
            .limit(1)
        )
        prev_hash = (await self._conn.execute(last)).scalar() or GENESIS_HASH
        digest = chain_hash(prev_hash, record.body)
        result = await self._conn.execute(
            insert(audit_log),
            {
                "tenant_id": tenant_id,
                "actor": record.actor,
                "action": record.action,
                "resource": record.resource,
                "data": record.data,
                "prev_hash": prev_hash,
                "hash": digest,
                "created_at": record.created_at,
            },
        )
        primary_key = result.inserted_primary_key
        if primary_key is None:
            raise RuntimeError("audit insert returned no id")
        return _recorded(record, int(primary_key[0]), prev_hash, digest)

    async def _record_postgres(self, record: AuditRecord) -> AuditEntry:
        params = {
            "tenant": record.tenant_id,
            "body": record.body,
            "actor": record.actor,
            "action": record.action,
            "resource": record.resource,
            "data": record.data,
            "at": record.created_at,
        }
        try:
            row = (await self._conn.execute(_PG_APPEND, params)).one()
        except IntegrityError:
            raise NotFoundError(f"tenant {record.tenant_id} not found") from None
        return _recorded(record, int(row.id), row.prev_hash, row.hash)

    async def list(
        self,
        tenant_id: str,
        limit: int,
        cursor: str | None = None,
        *,
        filters: AuditFilter | None = None,
    ) -> Page[AuditEntry]:
        query = select(audit_log).where(audit_log.c.tenant_id == tenant_id)
        if filters is not None:
            query = filters.apply(query)
        return await fetch_page(
            self._conn, query, audit_log.c.id, limit, cursor, _entry, parse=parse_int_cursor
        )

    async def verify(self, tenant_id: str) -> AuditVerification:
        """Walk the tenant's chain; the first entry whose links or hash do not match fails it."""
        prev_hash, checked, after = GENESIS_HASH, 0, 0
        while True:
            query = (
                select(audit_log)
                .where(audit_log.c.tenant_id == tenant_id, audit_log.c.id > after)
                .order_by(audit_log.c.id)
                .limit(_VERIFY_BATCH)
            )
            rows = (await self._conn.execute(query)).all()
            for row in rows:
                entry = _entry(row)
                if entry.prev_hash != prev_hash or entry.hash != _expected_hash(entry, prev_hash):
                    return AuditVerification(ok=False, checked=checked, first_bad_id=entry.id)
                prev_hash, checked, after = entry.hash, checked + 1, entry.id
            if len(rows) < _VERIFY_BATCH:
                return AuditVerification(ok=True, checked=checked, first_bad_id=None)
