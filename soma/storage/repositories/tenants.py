"""Tenants: the root every other row belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row

from soma.core.clock import utcnow
from soma.core.errors import ConflictError
from soma.core.ids import new_id
from soma.storage.repositories.base import Page, Repository, fetch_page, insert_or_ignore
from soma.storage.tables import tenants


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: datetime


def _tenant(row: Row[Any]) -> Tenant:
    return Tenant(id=row.id, name=row.name, created_at=row.created_at)


class TenantRepository(Repository):
    __slots__ = ()

    async def create(self, name: str, *, tenant_id: str | None = None) -> Tenant:
        """Raises ConflictError when the name or id is taken."""
        tenant = Tenant(id=tenant_id or new_id(), name=name, created_at=utcnow())
        statement = insert_or_ignore(self._conn, tenants, ["name"]).returning(tenants.c.id)
        row = (
            await self._conn.execute(
                statement, {"id": tenant.id, "name": name, "created_at": tenant.created_at}
            )
        ).first()
        if row is None:
            raise ConflictError(f"tenant name {name!r} is taken")
        return tenant

    async def get(self, tenant_id: str) -> Tenant | None:
        row = (await self._conn.execute(select(tenants).where(tenants.c.id == tenant_id))).first()
        return None if row is None else _tenant(row)

    async def get_by_name(self, name: str) -> Tenant | None:
        row = (await self._conn.execute(select(tenants).where(tenants.c.name == name))).first()
        return None if row is None else _tenant(row)

    async def get_limits(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's overrides of the `limits` settings; None for an unknown tenant."""
        query = select(tenants.c.limits).where(tenants.c.id == tenant_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else dict(row[0] or {})

    async def set_limits(self, tenant_id: str, limits: dict[str, Any]) -> bool:
        """Replace the overrides; False for an unknown tenant."""
        statement = (
            update(tenants)
            .where(tenants.c.id == tenant_id)
            .values(limits=limits)
            .returning(tenants.c.id)
        )
        return (await self._conn.execute(statement)).first() is not None

    async def list(self, limit: int, cursor: str | None = None) -> Page[Tenant]:
        return await fetch_page(self._conn, select(tenants), tenants.c.id, limit, cursor, _tenant)
