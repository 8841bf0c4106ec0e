"""Tenants' limit overrides as stored in the database."""

from __future__ import annotations

from typing import Any

from soma.storage.database import Database


class StoredOverrides:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def tenant_limits(self, tenant_id: str) -> dict[str, Any] | None:
        async with self._database.read() as uow:
            return await uow.tenants.get_limits(tenant_id)
