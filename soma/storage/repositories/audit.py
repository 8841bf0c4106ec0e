"""The audit log: append-only, hash-chained per tenant, verifiable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Row

from soma.core.clock import utcnow
from soma.core.errors import NotFoundError
from soma.storage.audit_chain import GENESIS_HASH, entry_hash
from soma.storage.repositories.base import Page, Repository, fetch_page, parse_int_cursor
from soma.storage.tables import audit_log, tenants

_VERIFY_BATCH = 500


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
        # Locking the tenant row serialises appends per tenant (SQLite: the write lock does).
        lock = select(tenants.c.id).where(tenants.c.id == tenant_id).with_for_update()
        if (await self._conn.execute(lock)).first() is None:
            raise NotFoundError(f"tenant {tenant_id} not found")
        last = (
            select(audit_log.c.hash)
            .where(audit_log.c.tenant_id == tenant_id)
            .order_by(audit_log.c.id.desc())
            .limit(1)
        )
        prev_hash = (await self._conn.execute(last)).scalar() or GENESIS_HASH
        # Microsecond UTC precision round-trips on both dialects, so verification recomputes it.
        created_at = utcnow()
        digest = entry_hash(
            prev_hash,
            tenant_id=tenant_id,
            actor=actor,
            action=action,
            resource=resource,
            data=data,
            created_at=created_at,
        )
        result = await self._conn.execute(
            insert(audit_log),
            {
                "tenant_id": tenant_id,
                "actor": actor,
                "action": action,
                "resource": resource,
                "data": data,
                "prev_hash": prev_hash,
                "hash": digest,
                "created_at": created_at,
            },
        )
        primary_key = result.inserted_primary_key
        if primary_key is None:
            raise RuntimeError("audit insert returned no id")
        return AuditEntry(
            id=int(primary_key[0]),
            tenant_id=tenant_id,
            actor=actor,
            action=action,
            resource=resource,
            data=dict(data),
            prev_hash=prev_hash,
            hash=digest,
            created_at=created_at,
        )

    async def list(self, tenant_id: str, limit: int, cursor: str | None = None) -> Page[AuditEntry]:
        query = select(audit_log).where(audit_log.c.tenant_id == tenant_id)
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
