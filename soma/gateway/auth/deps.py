"""FastAPI dependencies: authenticate every gateway route, then check scopes per route.

`GatewayService.routers()` mounts all gateway routers under one router whose dependency is an
`Authenticator`, so every route answers 401 without a valid key; routes then declare
`Depends(require_scope("chat"))` (or "admin") and get the `Principal`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from soma.gateway.auth.guard import FailedAuthGuard, retry_after
from soma.gateway.auth.principal import Principal
from soma.gateway.auth.verifier import KeyVerifier, Verdict, Verification
from soma.gateway.metrics import GatewayMetrics
from soma.observability.logging import tenant_id_var

_log = logging.getLogger("soma.gateway.auth")
_MISSING = "an API key is required: Authorization: Bearer <key>"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_DETAIL = {
    Verdict.MALFORMED: "the bearer token is not a valid API key",
    Verdict.UNKNOWN: "unknown API key",
    Verdict.MISMATCH: "unknown API key",
    Verdict.REVOKED: "the API key has been revoked",
    Verdict.UNCHECKED: "unknown API key",
}

_LIMITED = "too many failed authentications from this address; retry later"

_bearer = HTTPBearer(auto_error=False, description="An API key: `soma_<prefix>_<secret>`")


class RateCheck(Protocol):
    async def check(self, request: Request, principal: Principal) -> None:
        """Raise (429, 503) when this request may not go on."""
        ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """One authentication: the verification, and how long to wait when rate limited."""

    verification: Verification
    limited_for_s: float = 0.0

    @property
    def principal(self) -> Principal | None:
        return None if self.limited_for_s else self.verification.principal


def client_address(request: Request) -> str:
    # uvicorn already resolved X-Forwarded-For from trusted proxies into request.client.
    return request.client.host if request.client is not None else "unknown"


class Authenticator:
    """The router-level dependency: verifies the bearer key and records the principal."""

    def __init__(
        self,
        verifier: KeyVerifier,
        guard: FailedAuthGuard,
        metrics: GatewayMetrics,
        rate: RateCheck | None = None,
    ) -> None:
        """`rate`: the request rate limit, checked for every authenticated request."""
        self._rate = rate
        self._verifier = verifier
        self._guard = guard
        self._metrics = metrics
        # A verdict's counter child, resolved once (labels() takes a lock per call).
        self._count = functools.lru_cache(maxsize=32)(metrics.auth.labels)

    async def authenticate(self, presented: str, address: str) -> Outcome:
        """Verify a key for a client; failures count against the address's limit.

        A blocked address is still served from the caches (a valid key keeps working), but
        an unknown prefix costs it no database lookup: it is refused as rate limited.
        """
        blocked_for = self._guard.blocked_for(address)
        verification = await self._verifier.verify(presented, lookup=not blocked_for)
        if verification.verdict is Verdict.UNCHECKED:
            return Outcome(verification, blocked_for)
        if verification.principal is not None:
            return Outcome(verification)
        if blocked_for:
            return Outcome(verification, blocked_for)
        return Outcome(verification, await self._guard.failed(address))

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            self._count("missing").inc()
            raise HTTPException(401, _MISSING, headers=_CHALLENGE)
        try:
            outcome = await self.authenticate(credentials.credentials, client_address(request))
        except Exception:
            # Fail closed, but as "try again" rather than as a bad key or an opaque 500.
            self._count("error").inc()
            _log.exception("API key verification failed")
            raise HTTPException(
                503, "API keys cannot be verified right now", headers={"Retry-After": "1"}
            ) from None
        verification = outcome.verification
        if outcome.limited_for_s:
            self._count("limited").inc()
            raise HTTPException(
                429, _LIMITED, headers={"Retry-After": retry_after(outcome.limited_for_s)}
            )
        self._count(verification.verdict.value).inc()
        if verification.principal is None:
            raise HTTPException(401, _DETAIL[verification.verdict], headers=_CHALLENGE)
        principal = verification.principal
        request.state.soma_principal = principal
        # Each request runs in its own task (own context), so this ends with the request.
        tenant_id_var.set(principal.tenant_id)
        if self._rate is not None:
            await self._rate.check(request, principal)
        return principal

    async def admit(self, request: Request) -> Principal:
        """The same check for a route that FastAPI does not solve (`soma.gateway.fast_message`)."""
        return await self(request, await _bearer(request))


async def current_principal(request: Request) -> Principal:
    """The caller of a gateway route (set by the Authenticator of the enclosing router)."""
    principal = getattr(request.state, "soma_principal", None)
    if not isinstance(principal, Principal):
        raise RuntimeError(
            f"route {request.url.path} is not mounted under the gateway's Authenticator"
        )
    return principal


def check_scope(principal: Principal, scope: str) -> Principal:
    """403 unless the caller's key has `scope`."""
    if not principal.has(scope):
        raise HTTPException(403, f"this API key lacks the {scope!r} scope")
    return principal


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency answering 403 unless the caller's key has `scope`; returns the caller."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        return check_scope(principal, scope)

    check.__name__ = f"require_scope_{scope}"
    return check


ChatCaller = Annotated[Principal, Depends(require_scope("chat"))]
"""A route parameter: the caller, who must hold the `chat` scope."""
AdminCaller = Annotated[Principal, Depends(require_scope("admin"))]
"""A route parameter: the caller, who must hold the `admin` scope."""
