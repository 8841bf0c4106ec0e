"""Bodies of `/v1/admin/tenants` and `/v1/admin/keys`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, Strict, field_validator

from soma.gateway.auth.keys import Scope
from soma.gateway.schemas.common import Name, RequestBody, ResponseBody
from soma.storage.repositories import ApiKey, Tenant


class TenantCreate(RequestBody):
    name: Name


class TenantOut(ResponseBody):
    id: str
    name: str
    created_at: datetime

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(id=tenant.id, name=tenant.name, created_at=tenant.created_at)


class KeyCreate(RequestBody):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    scopes: Annotated[
        # Strict would accept only `Scope` instances; JSON brings their string values.
        list[Annotated[Scope, Strict(False)]], Field(min_length=1, max_length=len(Scope))
    ]
    tenant_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """Another tenant than the caller's: platform admins only."""

    @field_validator("scopes")
    @classmethod
    def _unique(cls, scopes: list[Scope]) -> list[Scope]:
        return sorted(set(scopes))


class KeyOut(ResponseBody):
    """A key as listed: never its secret or hash."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            tenant_id=key.tenant_id,
            name=key.name,
            prefix=key.prefix,
            scopes=list(key.scopes),
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyOut):
    key: str
    """The full key, shown in this response only."""

    @classmethod
    def issued(cls, key: ApiKey, plaintext: str) -> KeyCreated:
        return cls(**KeyOut.of(key).model_dump(), key=plaintext)


class LimitsPatch(RequestBody):
    """Overrides of the `limits` settings for one tenant; `null` returns one to its default."""

    key_requests_per_s: Annotated[float, Field(ge=0.001, le=1_000_000)] | None = None
    key_burst: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    tenant_requests_per_s: Annotated[float, Field(ge=0.001, le=1_000_000)] | None = None
    tenant_burst: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    max_inflight_runs: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    token_budget: Annotated[int, Field(ge=1)] | None = None
    token_window_s: Annotated[int, Field(ge=60, le=31_536_000)] | None = None


class TenantPatch(RequestBody):
    limits: LimitsPatch


class TenantDetail(TenantOut):
    limits: dict[str, Any]
    """In force: the settings' defaults with this tenant's overrides."""
    overrides: dict[str, Any]
