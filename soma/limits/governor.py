"""The limits every door applies: request rates per key and tenant, runs in flight per tenant,
and LLM tokens per tenant per window (ARCHITECTURE §9)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from soma.config.governance import LimitsSettings
from soma.core.errors import LimitExceededError, UnavailableError
from soma.limits.model import TenantLimits
from soma.limits.port import Admission, Bucket, Quotas, Taken

_log = logging.getLogger("soma.limits")
# A bucket refilled at a trickle may be full only in years (or never: inf): say a day.
_MAX_RESET_S = 86_400.0


class Overrides(Protocol):
    async def tenant_limits(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's overrides; None for an unknown tenant."""
        ...


@dataclass(frozen=True, slots=True)
class RateVerdict:
    taken: Taken

    @property
    def headers(self) -> dict[str, str]:
        """`RateLimit-*` of the tightest bucket (draft-ietf-httpapi-ratelimit-headers)."""
        t = self.taken
        return {
            "RateLimit-Limit": str(t.limit),
            "RateLimit-Remaining": str(t.remaining),
            "RateLimit-Reset": str(math.ceil(min(t.reset_s, _MAX_RESET_S))),
        }


class Limits:
    """Knows each tenant's limits (cached `limits.cache_ttl_s`) and applies them on `Quotas`."""

    def __init__(
        self,
        settings: LimitsSettings,
        quotas: Quotas,
        overrides: Overrides,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._defaults = TenantLimits.defaults(settings)
        self._quotas = quotas
        self._overrides = overrides
        self._clock = clock
        self._wall = wall
        self._cache: dict[str, tuple[TenantLimits, float]] = {}
        self._loading: dict[str, asyncio.Future[TenantLimits]] = {}

    async def of(self, tenant_id: str) -> TenantLimits:
        cached = self._cache.get(tenant_id)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        # One lookup per tenant at a time: concurrent requests wait for it rather than each
        # reading the database when the entry expires.
        loading = self._loading.get(tenant_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load(tenant_id))
            self._loading[tenant_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(tenant_id, None))
        return await asyncio.shield(loading)

    async def _load(self, tenant_id: str) -> TenantLimits:
        found = await self._overrides.tenant_limits(tenant_id)
        limits = self._defaults.with_overrides(found or {})
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[tenant_id] = (limits, self._clock() + self._settings.cache_ttl_s)
        return limits

    def forget(self, tenant_id: str) -> None:
        """This replica sees a change at once (others within `cache_ttl_s`)."""
        self._cache.pop(tenant_id, None)
        self._loading.pop(tenant_id, None)

    async def request(self, tenant_id: str, key_id: str) -> RateVerdict:
        """One request of `key_id`: takes from the key's and the tenant's buckets together."""
        limits = await self.of(tenant_id)
        # The hash tag keeps a tenant's keys in one Redis Cluster slot (one script).
        buckets = (
            Bucket(f"rl:{{{tenant_id}}}:key:{key_id}", limits.key_requests_per_s, limits.key_burst),
            Bucket(f"rl:{{{tenant_id}}}", limits.tenant_requests_per_s, limits.tenant_burst),
        )
        return RateVerdict(await self._quotas.take(buckets))

    async def admit(self, tenant_id: str, run_id: str) -> None:
        """Count a new run in flight; LimitExceededError when the tenant is at its cap or its token
        budget is spent."""
        limits = await self.of(tenant_id)
        counter, left_s = self._window(tenant_id, limits)
        outcome = await self._quotas.admit(
            _pool(tenant_id), run_id, limits.max_inflight_runs, self._settings.inflight_ttl_s,
            counter, limits.token_budget,
        )  # fmt: skip
        if outcome is Admission.FULL:
            raise LimitExceededError(
                f"the tenant has {limits.max_inflight_runs} runs in flight, its limit; "
                "retry when some have finished",
                1.0,
            )
        if outcome is Admission.SPENT:
            raise LimitExceededError(self._spent_detail(limits), left_s)

    async def release(self, tenant_id: str, run_id: str) -> None:
        # Bookkeeping after the run's own transaction: an outage of the quotas store must not
        # undo a finished run; the slot then lapses after `limits.inflight_ttl_s`.
        try:
            await self._quotas.leave(_pool(tenant_id), run_id)
        except UnavailableError as exc:
            _log.warning("run %s stays counted in flight until it lapses: %s", run_id, exc)

    async def tokens_left(self, tenant_id: str) -> str | None:
        """None while the tenant may call a model; else why not (for the run's error)."""
        limits = await self.of(tenant_id)
        if limits.token_budget is None:
            return None
        counter, _ = self._window(tenant_id, limits)
        if await self._quotas.spent(counter) < limits.token_budget:
            return None
        return self._spent_detail(limits)

    async def spend_tokens(self, tenant_id: str, tokens: int) -> None:
        if tokens <= 0:
            return
        limits = await self.of(tenant_id)
        counter, left_s = self._window(tenant_id, limits)
        # The model has answered: failing the run now would not unspend its tokens.
        try:
            await self._quotas.spend(counter, tokens, left_s + 60)
        except UnavailableError as exc:
            _log.warning("%d tokens of tenant %s went uncounted: %s", tokens, tenant_id, exc)

    def _window(self, tenant_id: str, limits: TenantLimits) -> tuple[str, float]:
        """The counter of the current window and the seconds left in it."""
        now, size = self._wall(), limits.token_window_s
        index = int(now // size)
        return f"tok:{{{tenant_id}}}:{size}:{index}", (index + 1) * size - now

    @staticmethod
    def _spent_detail(limits: TenantLimits) -> str:
        return (
            f"the tenant's token budget ({limits.token_budget} tokens per "
            f"{limits.token_window_s} s) is spent"
        )


def _pool(tenant_id: str) -> str:
    return f"inflight:{{{tenant_id}}}"
