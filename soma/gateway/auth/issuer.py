"""Issuing and revoking API keys; the plaintext exists only in the issuing response."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from soma.core.errors import ConflictError
from soma.gateway.auth.keys import Scope, generate_key, normalize_scopes
from soma.gateway.auth.verifier import KeyVerifier
from soma.storage.database import Database
from soma.storage.repositories import ApiKey
from soma.storage.tables import api_keys, tenants
from soma.storage.uow import UnitOfWork

_PREFIX_ATTEMPTS = 3


class LastAdminKeyError(ConflictError):
    """Revoking this key would leave the platform tenant without an active admin key."""


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: ApiKey
    plaintext: str


async def issue_key(
    uow: UnitOfWork, tenant_id: str, *, name: str, scopes: Sequence[str], actor: str
) -> IssuedKey:
    """Create a key inside the caller's transaction (so it commits with whatever else it does)."""
    scope_list = normalize_scopes(tuple(scopes))
    attempts = 0
    while True:
        attempts += 1
        new = generate_key()
        try:
            key = await uow.api_keys.create(
                tenant_id,
                prefix=new.prefix,
                secret_hash=new.secret_hash,
                name=name,
                scopes=scope_list,
            )
            break
        except ConflictError:
            # 71 random bits make a prefix collision practically impossible; retry anyway.
            if attempts >= _PREFIX_ATTEMPTS:
                raise
    await uow.audit.append(
        tenant_id,
        actor=actor,
        action="api_key.create",
        resource=f"api_key:{key.id}",
        data={"name": name, "scopes": scope_list, "prefix": key.prefix},
    )
    return IssuedKey(key=key, plaintext=new.plaintext)


async def revoke_key(
    database: Database,
    verifier: KeyVerifier,
    tenant_id: str,
    key_id: str,
    *,
    actor: str,
    keep_admin_of: str,
) -> ApiKey | None:
    """Revoke a key of `tenant_id` (idempotent); None when the tenant has no such key.

    Raises LastAdminKeyError rather than revoke the last active admin key of `keep_admin_of`
    (the platform tenant), so that no admin can lock everyone out.
    """
    async with database.transaction() as uow:
        key = await uow.api_keys.get(tenant_id, key_id)
        if key is None:
            return None
        if tenant_id == keep_admin_of and not key.revoked and Scope.ADMIN in key.scopes:
            await _ensure_another_admin(uow, tenant_id, key_id)
        if await uow.api_keys.revoke(tenant_id, key_id):
            await uow.audit.append(
                tenant_id,
                actor=actor,
                action="api_key.revoke",
                resource=f"api_key:{key.id}",
                data={"prefix": key.prefix},
            )
        revoked = await uow.api_keys.get(tenant_id, key_id)
    # After the commit, so a replica that misses the cache next reads the revoked row; done even
    # for an already revoked key, so repeating a revocation also repairs a failed invalidation.
    await verifier.forget(key.prefix)
    return revoked


async def _ensure_another_admin(uow: UnitOfWork, tenant_id: str, key_id: str) -> None:
    """Raise LastAdminKeyError unless another active admin key of the tenant exists.

    Race-safe: on PostgreSQL the tenant row is locked first, so concurrent revocations in the
    tenant run one after the other and each counts what the previous one committed; on SQLite
    every write transaction already holds the one write lock (BEGIN IMMEDIATE).
    """
    conn = uow.connection
    await conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id).with_for_update())
    others = await conn.execute(
        select(api_keys.c.scopes).where(
            api_keys.c.tenant_id == tenant_id,
            api_keys.c.id != key_id,
            api_keys.c.revoked_at.is_(None),
        )
    )
    if not any(Scope.ADMIN in scopes for (scopes,) in others):
        raise LastAdminKeyError(
            "this is the last active admin key of the platform tenant: issue another admin key "
            "first (or recover offline with `python -m orchestrator.main --reset-admin-key`)"
        )
