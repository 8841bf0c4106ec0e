"""Issuing and revoking API keys; the plaintext exists only in the issuing response."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from soma.core.errors import ConflictError
from soma.gateway.auth.keys import generate_key, normalize_scopes
from soma.gateway.auth.verifier import KeyVerifier
from soma.storage.database import Database
from soma.storage.repositories import ApiKey
from soma.storage.uow import UnitOfWork

_PREFIX_ATTEMPTS = 3


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
    database: Database, verifier: KeyVerifier, tenant_id: str, key_id: str, *, actor: str
) -> ApiKey | None:
    """Revoke a key of `tenant_id` (idempotent); None when the tenant has no such key."""
    async with database.transaction() as uow:
        key = await uow.api_keys.get(tenant_id, key_id)
        if key is None:
            return None
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
