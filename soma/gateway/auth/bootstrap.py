"""First start: the default tenant, its assistant, and an admin key written to a file."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from soma.core.errors import ConflictError, StartupError
from soma.gateway.auth.issuer import issue_key
from soma.gateway.auth.key_file import remove_key_file, write_key_file
from soma.gateway.auth.keys import Scope
from soma.gateway.tenancy import DEFAULT_TENANT, Tenancy
from soma.storage.database import Database
from soma.storage.repositories import Tenant

_log = logging.getLogger("soma.gateway.bootstrap")
BOOTSTRAP_ACTOR = "bootstrap"
BOOTSTRAP_KEY_NAME = "bootstrap-admin"


async def bootstrap(database: Database, tenancy: Tenancy, key_file: Path) -> Tenant:
    """Return the default tenant, creating it (and the key file) when this start is the first.

    Idempotent: a later start finds the tenant and writes nothing. When replicas race, the
    unique tenant name lets exactly one create it; the others read the winner's tenant.
    """
    async with database.read() as uow:
        tenant = await uow.tenants.get_by_name(DEFAULT_TENANT)
    if tenant is None:
        tenant = await _create_default(database, tenancy, key_file)
    tenancy.set_default_tenant(tenant.id)
    await tenancy.ensure_assistant(tenant.id)
    return tenant


async def _create_default(database: Database, tenancy: Tenancy, key_file: Path) -> Tenant:
    try:
        tenant, key_id = await _create_with_key_file(database, tenancy, key_file)
    except ConflictError:
        # Another replica created the default tenant first; use that one.
        async with database.read() as uow:
            winner = await uow.tenants.get_by_name(DEFAULT_TENANT)
        if winner is None:
            raise
        _log.info("default tenant created by another replica", extra={"tenant_id": winner.id})
        return winner
    _log.info(
        "created the default tenant and its admin key; the key is in the bootstrap key file",
        extra={"tenant_id": tenant.id, "key_file": str(key_file), "key_id": key_id},
    )
    return tenant


async def _create_with_key_file(
    database: Database, tenancy: Tenancy, key_file: Path
) -> tuple[Tenant, str]:
    written = False
    try:
        async with database.transaction() as uow:
            tenant = await tenancy.add_tenant(uow, DEFAULT_TENANT, actor=BOOTSTRAP_ACTOR)
            issued = await issue_key(
                uow,
                tenant.id,
                name=BOOTSTRAP_KEY_NAME,
                scopes=[Scope.ADMIN, Scope.CHAT],
                actor=BOOTSTRAP_ACTOR,
            )
            # Written before the commit: if it cannot be written, no key exists that nobody
            # knows; if the commit fails, the file is removed again below.
            await _write(key_file, issued.plaintext)
            written = True
    except BaseException:
        if written:
            await asyncio.to_thread(remove_key_file, key_file)
        raise
    return tenant, issued.key.id


async def _write(key_file: Path, plaintext: str) -> None:
    try:
        await asyncio.to_thread(write_key_file, key_file, plaintext)
    except FileExistsError:
        raise StartupError(
            f"gateway: bootstrap key file {key_file} already exists but the database has no "
            "default tenant; move the file away (it belongs to another database)"
        ) from None
    except OSError as exc:
        raise StartupError(
            f"gateway: cannot write the bootstrap key file {key_file}: {exc.strerror or exc}"
        ) from exc
