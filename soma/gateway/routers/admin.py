"""`/v1/admin`: tenants and API keys (scope `admin`).

Authority rule: an admin key of the default tenant is a platform admin: it manages tenants and
the keys of every tenant. Any other admin key manages only its own tenant's keys; another
tenant's keys look missing (404) to it, and the tenant routes answer 403.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from soma.core.errors import ConflictError
from soma.gateway.admin_scope import managed_tenant, platform_only
from soma.gateway.auth.deps import AdminCaller
from soma.gateway.auth.issuer import LastAdminKeyError, issue_key, revoke_key
from soma.gateway.auth.principal import Principal
from soma.gateway.context import GatewayContext
from soma.gateway.json_route import JsonRoute
from soma.gateway.pagination import Page, PageRequest, page_request
from soma.gateway.problems import conflict, not_found, problem_responses
from soma.gateway.schemas.admin import (
    KeyCreate,
    KeyCreated,
    KeyOut,
    TenantCreate,
    TenantDetail,
    TenantOut,
    TenantPatch,
)
from soma.storage.repositories import ApiKey

Admin = AdminCaller
Paging = Annotated[PageRequest, Depends(page_request)]
TenantParam = Annotated[str | None, Query(min_length=1, max_length=64)]


def admin_router(ctx: GatewayContext) -> APIRouter:
    router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=JsonRoute)
    missing = problem_responses([404])
    # 409: the last active admin key of the platform tenant cannot be revoked.
    revocable = problem_responses([404, 409])

    async def key_tenant(caller: Principal, key_id: str, tenant_id: str | None) -> str:
        if tenant_id is not None or not ctx.tenancy.is_platform_tenant(caller.tenant_id):
            return await managed_tenant(ctx, caller, tenant_id)
        # A platform admin may name any tenant's key by its (globally unique) id alone.
        async with ctx.database.read() as uow:
            key = await uow.api_keys.get_any_tenant(key_id)
        if key is None:
            raise not_found("api key", key_id)
        return key.tenant_id

    async def revoke(caller: Principal, key_id: str, tenant_id: str | None) -> ApiKey:
        tenant = await key_tenant(caller, key_id, tenant_id)
        try:
            key = await revoke_key(
                ctx.database,
                ctx.verifier,
                tenant,
                key_id,
                actor=caller.actor,
                keep_admin_of=ctx.tenancy.default_tenant_id,
            )
        except LastAdminKeyError as exc:
            raise conflict(str(exc)) from None
        if key is None:
            raise not_found("api key", key_id)
        return key

    @router.post(
        "/tenants", status_code=201, response_model=TenantOut, responses=problem_responses([409])
    )
    async def create_tenant(caller: Admin, body: TenantCreate) -> TenantOut:
        platform_only(ctx, caller)
        try:
            async with ctx.database.transaction() as uow:
                tenant = await ctx.tenancy.add_tenant(uow, body.name, actor=caller.actor)
        except ConflictError as exc:
            raise conflict(str(exc)) from None
        return TenantOut.of(tenant)

    @router.get("/tenants", response_model=Page[TenantOut])
    async def list_tenants(caller: Admin, page: Paging) -> Page[TenantOut]:
        platform_only(ctx, caller)
        async with ctx.database.read() as uow:
            tenants, next_cursor = await uow.tenants.list(page.limit, page.cursor)
        return page.page([TenantOut.of(t) for t in tenants], next_cursor)

    async def tenant_detail(tenant_id: str) -> TenantDetail:
        async with ctx.database.read() as uow:
            tenant = await uow.tenants.get(tenant_id)
            overrides = await uow.tenants.get_limits(tenant_id)
        if tenant is None or overrides is None:
            raise not_found("tenant", tenant_id)
        limits = asdict(await ctx.limits.of(tenant_id))
        return TenantDetail(**TenantOut.of(tenant).model_dump(), limits=limits, overrides=overrides)

    @router.get("/tenants/{tenant_id}", response_model=TenantDetail, responses=missing)
    async def get_tenant(caller: Admin, tenant_id: str) -> TenantDetail:
        return await tenant_detail(await managed_tenant(ctx, caller, tenant_id))

    @router.patch("/tenants/{tenant_id}", response_model=TenantDetail, responses=missing)
    async def patch_tenant(caller: Admin, tenant_id: str, body: TenantPatch) -> TenantDetail:
        """Change a tenant's limits at run time (platform admins); audited."""
        platform_only(ctx, caller)
        changes = body.limits.model_dump(exclude_unset=True)
        async with ctx.database.transaction() as uow:
            overrides = await uow.tenants.get_limits(tenant_id)
            if overrides is None:
                raise not_found("tenant", tenant_id)
            for name, value in changes.items():
                if value is None:
                    overrides.pop(name, None)
                else:
                    overrides[name] = value
            await uow.tenants.set_limits(tenant_id, overrides)
            await uow.audit.append(
                tenant_id, actor=caller.actor, action="tenant.limits",
                resource=f"tenant:{tenant_id}", data={"changes": changes},
            )  # fmt: skip
        ctx.limits.forget(tenant_id)
        return await tenant_detail(tenant_id)

    @router.post("/keys", status_code=201, response_model=KeyCreated, responses=missing)
    async def create_key(caller: Admin, body: KeyCreate) -> KeyCreated:
        tenant = await managed_tenant(ctx, caller, body.tenant_id)
        async with ctx.database.transaction() as uow:
            issued = await issue_key(
                uow, tenant, name=body.name, scopes=body.scopes, actor=caller.actor
            )
        return KeyCreated.issued(issued.key, issued.plaintext)

    @router.get("/keys", response_model=Page[KeyOut], responses=missing)
    async def list_keys(caller: Admin, page: Paging, tenant_id: TenantParam = None) -> Page[KeyOut]:
        tenant = await managed_tenant(ctx, caller, tenant_id)
        async with ctx.database.read() as uow:
            keys, next_cursor = await uow.api_keys.list(tenant, page.limit, page.cursor)
        return page.page([KeyOut.of(k) for k in keys], next_cursor)

    @router.delete("/keys/{key_id}", status_code=204, responses=revocable)
    async def delete_key(caller: Admin, key_id: str, tenant_id: TenantParam = None) -> Response:
        await revoke(caller, key_id, tenant_id)
        return Response(status_code=204)

    @router.post("/keys/{key_id}/revoke", response_model=KeyOut, responses=revocable)
    async def revoke_key_route(caller: Admin, key_id: str, tenant_id: TenantParam = None) -> KeyOut:
        return KeyOut.of(await revoke(caller, key_id, tenant_id))

    return router
