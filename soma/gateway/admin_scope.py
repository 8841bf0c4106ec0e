"""Which tenant an admin request may act on (keys, audit, dead letters).

An admin key of the default tenant is a platform admin: it may name any tenant. Any other
admin key acts on its own tenant; another tenant looks missing (404) to it.
"""

from __future__ import annotations

from fastapi import HTTPException

from soma.gateway.auth.principal import Principal
from soma.gateway.context import GatewayContext
from soma.gateway.problems import not_found


async def managed_tenant(ctx: GatewayContext, caller: Principal, tenant_id: str | None) -> str:
    """The tenant a request acts on, if this caller may act on it; 404 otherwise."""
    if tenant_id is None or tenant_id == caller.tenant_id:
        return caller.tenant_id
    if ctx.tenancy.is_platform_tenant(caller.tenant_id):
        async with ctx.database.read() as uow:
            if await uow.tenants.get(tenant_id) is not None:
                return tenant_id
    raise not_found("tenant", tenant_id)


def platform_only(ctx: GatewayContext, caller: Principal) -> None:
    if not ctx.tenancy.is_platform_tenant(caller.tenant_id):
        raise HTTPException(403, "only an admin key of the default tenant manages tenants")
