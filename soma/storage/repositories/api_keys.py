"""API keys: only a hash of the secret is stored; the prefix finds the key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row

from soma.core.clock import utcnow
from soma.core.errors import ConflictError
from soma.core.ids import new_id
from soma.storage.repositories.base import Page, Repository, fetch_page, insert_or_ignore
from soma.storage.tables import api_keys


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    tenant_id: str
    prefix: str
    secret_hash: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _api_key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        prefix=row.prefix,
        secret_hash=row.secret_hash,
        name=row.name,
        scopes=tuple(row.scopes),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class ApiKeyRepository(Repository):
    __slots__ = ()

    async def create(
        self,
        tenant_id: str,
        *,
        prefix: str,
        secret_hash: str,
        name: str,
        scopes: Sequence[str],
        key_id: str | None = None,
    ) -> ApiKey:
        """Raises ConflictError when the prefix is taken."""
        key = ApiKey(
            id=key_id or new_id(),
            tenant_id=tenant_id,
            prefix=prefix,
            secret_hash=secret_hash,
            name=name,
            scopes=tuple(scopes),
            created_at=utcnow(),
            revoked_at=None,
        )
        statement = insert_or_ignore(self._conn, api_keys, ["prefix"]).returning(api_keys.c.id)
        values = {
            "id": key.id,
            "tenant_id": tenant_id,
            "prefix": prefix,
            "secret_hash": secret_hash,
            "name": name,
            "scopes": list(key.scopes),
            "created_at": key.created_at,
        }
        if (await self._conn.execute(statement, values)).first() is None:
            raise ConflictError("api key prefix is taken")
        return key

    async def get(self, tenant_id: str, key_id: str) -> ApiKey | None:
        query = select(api_keys).where(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else _api_key(row)

    async def list(self, tenant_id: str, limit: int, cursor: str | None = None) -> Page[ApiKey]:
        query = select(api_keys).where(api_keys.c.tenant_id == tenant_id)
        return await fetch_page(self._conn, query, api_keys.c.id, limit, cursor, _api_key)

    async def revoke(self, tenant_id: str, key_id: str) -> bool:
        """True when a live key of this tenant was revoked now."""
        statement = (
            update(api_keys)
            .where(
                api_keys.c.tenant_id == tenant_id,
                api_keys.c.id == key_id,
                api_keys.c.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
            .returning(api_keys.c.id)
        )
        return (await self._conn.execute(statement)).first() is not None

    async def lookup_by_prefix(self, prefix: str) -> ApiKey | None:
        """Read without a tenant: authentication learns the tenant from the key."""
        row = (
            await self._conn.execute(select(api_keys).where(api_keys.c.prefix == prefix))
        ).first()
        return None if row is None else _api_key(row)

    async def get_any_tenant(self, key_id: str) -> ApiKey | None:
        """Read without a tenant, for platform administration only (key ids are global)."""
        row = (await self._conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return None if row is None else _api_key(row)
