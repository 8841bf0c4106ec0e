"""The request rate limit of every gateway route: per API key and per tenant, one check."""

from __future__ import annotations

import logging
from typing import Protocol

from fastapi import HTTPException, Request

from soma.gateway.auth.guard import retry_after
from soma.gateway.auth.principal import Principal

_log = logging.getLogger("soma.gateway.rate")
RATE_HEADERS_STATE = "soma_rate_headers"
"""Where the check leaves its `RateLimit-*` headers; the edge adds them to the answer."""


class Taking(Protocol):
    @property
    def allowed(self) -> bool: ...

    @property
    def retry_after_s(self) -> float: ...


class RateVerdict(Protocol):
    @property
    def taken(self) -> Taking: ...

    @property
    def headers(self) -> dict[str, str]: ...


class RequestLimits(Protocol):
    async def request(self, tenant_id: str, key_id: str) -> RateVerdict: ...


class RateGate:
    """Checked by the Authenticator once a key is verified (no dependency of its own to
    resolve per request): 429 once the key's or tenant's bucket is empty. Fails closed: a
    limiter that cannot answer makes the request 503."""

    def __init__(self, limits: RequestLimits) -> None:
        self._limits = limits

    async def check(self, request: Request, principal: Principal) -> None:
        try:
            verdict = await self._limits.request(principal.tenant_id, principal.key_id)
        except Exception as exc:
            # One line: during a cache outage every request lands here.
            _log.warning("the request rate limit could not be checked: %s", exc)
            raise HTTPException(
                503, "rate limits cannot be checked right now", headers={"Retry-After": "1"}
            ) from None
        setattr(request.state, RATE_HEADERS_STATE, verdict.headers)
        if not verdict.taken.allowed:
            wait = retry_after(verdict.taken.retry_after_s)
            raise HTTPException(
                429,
                "too many requests for this API key or tenant; retry later",
                headers={"Retry-After": wait},
            )
