"""Offline recovery: a new admin key of the default tenant, written over the admin key file."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from soma.gateway.auth.issuer import issue_key
from soma.gateway.auth.key_file import publish_key_file, stage_key_file
from soma.gateway.auth.keys import Scope
from soma.gateway.tenancy import DEFAULT_TENANT, Tenancy
from soma.storage.database import Database

_log = logging.getLogger("soma.gateway.reset")
RESET_ACTOR = "reset-admin-key"
RESET_KEY_NAME = "reset-admin"


@dataclass(frozen=True, slots=True)
class ResetKey:
    tenant_id: str
    key_id: str
    key_file: Path


async def reset_admin_key(database: Database, tenancy: Tenancy, key_file: Path) -> ResetKey:
    """Issue an admin (and chat) key of the default tenant, creating the tenant when the
    database has none, and replace `key_file` with it. Existing keys are left as they are.

    The key is staged in a 0600 file before the commit and published after it, so a failed
    commit leaves the old file in place, and a failed publish revokes the new key again.
    """
    staged: Path | None = None
    committed = False
    tenant_id = key_id = ""
    try:
        async with database.transaction() as uow:
            tenant = await uow.tenants.get_by_name(DEFAULT_TENANT)
            if tenant is None:
                tenant = await tenancy.add_tenant(uow, DEFAULT_TENANT, actor=RESET_ACTOR)
            tenant_id = tenant.id
            issued = await issue_key(
                uow,
                tenant_id,
                name=RESET_KEY_NAME,
                scopes=[Scope.ADMIN, Scope.CHAT],
                actor=RESET_ACTOR,
            )
            key_id = issued.key.id
            staged = await asyncio.to_thread(stage_key_file, key_file, issued.plaintext)
        committed = True
        await asyncio.to_thread(publish_key_file, staged, key_file, replace=True)
    except BaseException:
        if staged is not None:
            staged.unlink(missing_ok=True)
        if committed:
            await _revoke_unpublished(database, tenant_id, key_id)
        raise
    _log.info(
        "issued a new admin key of the default tenant; the key is in the admin key file",
        extra={"tenant_id": tenant_id, "key_id": key_id, "key_file": str(key_file)},
    )
    return ResetKey(tenant_id, key_id, key_file)


async def _revoke_unpublished(database: Database, tenant_id: str, key_id: str) -> None:
    # A key nobody can read is useless but still valid: take it back.
    async with database.transaction() as uow:
        if await uow.api_keys.revoke(tenant_id, key_id):
            await uow.audit.append(
                tenant_id,
                actor=RESET_ACTOR,
                action="api_key.revoke",
                resource=f"api_key:{key_id}",
                data={"reason": "the key file could not be written"},
            )
