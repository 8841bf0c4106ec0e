"""GatewayService: the HTTP API's routers, their authentication, and the first-start bootstrap."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy.exc import DBAPIError

from soma.config import Settings
from soma.core import Health, HealthStatus
from soma.core.errors import StartupError
from soma.gateway.auth.bootstrap import bootstrap
from soma.gateway.auth.deps import Authenticator
from soma.gateway.auth.guard import FailedAuthGuard
from soma.gateway.auth.keys import Scope
from soma.gateway.auth.principal import Principal
from soma.gateway.auth.verifier import KeyVerifier
from soma.gateway.context import GatewayContext
from soma.gateway.fast_message import fast_message_route
from soma.gateway.metrics import GatewayMetrics
from soma.gateway.ports import KeyValue
from soma.gateway.problems import problem_responses
from soma.gateway.rate import RateGate
from soma.gateway.routers.admin import admin_router
from soma.gateway.routers.agents import agents_router
from soma.gateway.routers.audit import audit_router
from soma.gateway.routers.chat import MessagePost
from soma.gateway.routers.dlq import dlq_router
from soma.gateway.routers.sessions import sessions_router
from soma.gateway.tenancy import Tenancy
from soma.limits.governor import Limits
from soma.limits.port import Quotas
from soma.observability.metrics import Metrics
from soma.storage.database import Database

_log = logging.getLogger("soma.gateway")

_DETAIL = {
    HealthStatus.HEALTHY: "",
    HealthStatus.STARTING: "bootstrapping",
    HealthStatus.STOPPED: "not started",
    HealthStatus.UNHEALTHY: "bootstrap failed",
    HealthStatus.DEGRADED: "",
}

GATEWAY_PROBLEMS = (400, 401, 403, 413, 422, 429, 503)
"""What any gateway route may answer: malformed, unauthenticated, forbidden, too large,
invalid, too many failed authentications, not started or draining. Routes document their own
404/409 on top."""
EXTRA_PROBLEMS = (404, 409)

RouterFactory = Callable[[GatewayContext], APIRouter]
ROUTERS: tuple[RouterFactory, ...] = (
    admin_router,
    audit_router,
    dlq_router,
    agents_router,
    sessions_router,
)
"""Every router of the gateway; all are mounted behind the same Authenticator."""
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class GatewayService:
    """A `Service` and a route provider; routes answer 503 until `start()` has bootstrapped.

    `router_factories` build the gateway's own routers from its context; `extra_routers`
    (chat, runs, ...) are mounted as they are. All of them sit behind the same Authenticator,
    so every route needs a valid key; each route then checks its scope with `require_scope`.
    `public_routers` (the A2A platform card) are the exception: open to anyone.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        database: Database,
        kv: KeyValue,
        quotas: Quotas,
        router_factories: Sequence[RouterFactory] = ROUTERS,
        extra_routers: Sequence[APIRouter] = (),
        closing: asyncio.Event | None = None,
        public_routers: Sequence[APIRouter] = (),
        *,
        limits: Limits,
        message_post: MessagePost | None = None,
    ) -> None:
        self._settings = settings
        self._database = database
        self._router_factories = tuple(router_factories)
        self._extra_routers = tuple(extra_routers)
        self._public_routers = tuple(public_routers)
        self._message_post = message_post
        gateway_metrics = GatewayMetrics(metrics)
        self.tenancy = Tenancy(database, settings.llm.default_model)
        self.verifier = KeyVerifier(database, kv, settings.auth, gateway_metrics)
        guard = FailedAuthGuard(
            quotas, settings.auth.failed_auth_rate_per_s, settings.auth.failed_auth_burst
        )
        self.authenticator = Authenticator(
            self.verifier, guard, gateway_metrics, rate=RateGate(limits)
        )
        self.limits = limits
        self.context = GatewayContext(settings, database, self.tenancy, self.verifier, self.limits)
        self._status = HealthStatus.STOPPED
        self.closing = closing or asyncio.Event()
        """Set on drain: routes that accept new work answer 503 and open streams end."""
        self._admitting: Callable[[], bool] | None = None
        self._admitted = False

    @property
    def name(self) -> str:
        return "gateway"

    def routers(self) -> Sequence[APIRouter]:
        api = APIRouter(
            dependencies=[Depends(self._available), Depends(self.authenticator)],
            responses=problem_responses(GATEWAY_PROBLEMS),
        )
        # Routes match in order: the chat and runs routes (the hot path) go first.
        for router in self._extra_routers:
            # Their routes answer 404 (unknown session or run) and 409 (state conflicts).
            api.include_router(router, responses=problem_responses(EXTRA_PROBLEMS))
        for factory in self._router_factories:
            api.include_router(factory(self.context))
        # Routes anyone may read (the A2A platform card): no key, but only once started.
        public = APIRouter(dependencies=[Depends(self._available)])
        for router in self._public_routers:
            public.include_router(router, responses=problem_responses([503]))
        if self._message_post is None:
            return [api, public]
        # Plain message POSTs skip FastAPI's dependency solving; the rest fall back to `api`.
        fast = APIRouter()
        fast.routes.append(fast_message_route(self._admit, self._message_post, api))
        return [fast, api, public]

    async def _admit(self, request: Request) -> Principal:
        """What `api`'s dependencies check, for the fast message route."""
        await self._available(request)
        return await self.authenticator.admit(request)

    async def start(self) -> None:
        self._status = HealthStatus.STARTING
        key_file = self._settings.bootstrap_key_file
        try:
            tenant = await bootstrap(self._database, self.tenancy, key_file)
        except DBAPIError as exc:
            self._status = HealthStatus.UNHEALTHY
            lines = str(exc.orig or exc).strip().splitlines()
            cause = lines[0] if lines else type(exc).__name__
            raise StartupError(f"gateway: bootstrap failed in the database: {cause}") from None
        except BaseException:
            self._status = HealthStatus.UNHEALTHY
            raise
        self._status = HealthStatus.HEALTHY
        _log.info("gateway ready", extra={"default_tenant_id": tenant.id})

    async def drain(self) -> None:
        self.closing.set()

    async def stop(self) -> None:
        self.closing.set()
        self._status = HealthStatus.STOPPED

    async def health(self) -> Health:
        return Health(self._status, _DETAIL[self._status])

    def admit_when(self, ready: Callable[[], bool]) -> None:
        """Accept new work (any request but GET/HEAD/OPTIONS) only while `ready()` holds: the
        orchestrator binds its readiness here, so `/v1/health/ready` and accepting agree."""
        self._admitting = ready

    async def admits_health_details(self, credentials: str, client: str) -> bool:
        """True when `credentials` is an admin key of the platform tenant (fails closed)."""
        if self._status != HealthStatus.HEALTHY:
            return False
        try:
            outcome = await self.authenticator.authenticate(credentials, client)
        except Exception:
            _log.exception("API key verification for the health details failed")
            return False
        principal = outcome.principal
        return (
            principal is not None
            and principal.has(Scope.ADMIN)
            and self.tenancy.is_platform_tenant(principal.tenant_id)
        )

    async def _available(self, request: Request) -> None:
        if self._status != HealthStatus.HEALTHY:
            raise HTTPException(503, "the gateway is not started", headers={"Retry-After": "1"})
        admitting = self._admitting
        if request.method in _SAFE_METHODS or admitting is None:
            return
        if admitting():
            self._admitted = True
            return
        # Not admitting after having admitted means a drain: that takes longer than a start.
        wait = "5" if self.closing.is_set() or self._admitted else "1"
        raise HTTPException(
            503,
            "the platform is not ready (starting or shutting down); retry shortly",
            headers={"Retry-After": wait},
        )
