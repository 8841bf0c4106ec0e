"""The `policy` service: one fail-closed decision point over the embedded or OPA backend."""

from __future__ import annotations

import functools
import logging

from prometheus_client import Counter

from soma.config.settings import Settings
from soma.core.errors import StartupError
from soma.core.service import Health
from soma.observability.metrics import Metrics
from soma.policy.embedded import EmbeddedPolicy
from soma.policy.opa import OpaPolicy
from soma.policy.port import Decision, PolicyBackend, PolicyError, PolicyInput


class PolicyService:
    """Every decision of the platform goes through `decide`; an engine error is a deny,
    logged on `soma.policy` and counted with result `error`."""

    def __init__(self, backend: PolicyBackend, metrics: Metrics) -> None:
        self._backend = backend
        self._log = logging.getLogger("soma.policy")
        self._decisions = Counter(
            "soma_policy_decisions_total",
            "Policy decisions by action and result (allow, deny, approval, error).",
            ["action", "result"],
            registry=metrics.registry,
        )
        # Actions and results are few: each child is resolved once, not per decision.
        self._counted = functools.lru_cache(maxsize=256)(self._decisions.labels)

    @property
    def name(self) -> str:
        return "policy"

    @property
    def description(self) -> str:
        return self._backend.description

    async def start(self) -> None:
        try:
            await self._backend.start()
        except PolicyError as exc:
            raise StartupError(f"policy: {self._backend.description}: {exc}") from None

    async def stop(self) -> None:
        await self._backend.stop()

    async def health(self) -> Health:
        try:
            return Health.healthy(await self._backend.check())
        except PolicyError as exc:
            return Health.unhealthy(str(exc))

    async def decide(self, input: PolicyInput) -> Decision:
        try:
            decision = await self._backend.evaluate(input)
        except Exception as exc:
            cause = str(exc) if isinstance(exc, PolicyError) else f"{type(exc).__name__}: {exc}"
            self._log.error(
                "policy engine error, denying %s: %s",
                input.action,
                cause,
                extra={"action": input.action, "policy_backend": self._backend.description},
            )
            self._counted(input.action, "error").inc()
            return Decision(False, False, f"policy engine error: {cause}")
        self._counted(input.action, decision.result).inc()
        return decision


def create_backend(settings: Settings) -> PolicyBackend:
    policy = settings.policy
    if policy.engine == "opa":
        return OpaPolicy(policy.opa_url, policy.timeout_s)
    return EmbeddedPolicy(policy.rego_dir)


def create_policy(settings: Settings, metrics: Metrics) -> PolicyService:
    """Build the service for `policy.engine`; policies load (or OPA is probed) in `start()`."""
    return PolicyService(create_backend(settings), metrics)


def describe(settings: Settings) -> str:
    """One line for the dry-run plan."""
    return create_backend(settings).description
