"""A tenant's effective limits: the `limits` settings with the tenant's own overrides."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from soma.config.governance import LimitsSettings


@dataclass(frozen=True, slots=True)
class TenantLimits:
    key_requests_per_s: float
    key_burst: int
    tenant_requests_per_s: float
    tenant_burst: int
    max_inflight_runs: int
    token_budget: int | None
    token_window_s: int

    @classmethod
    def defaults(cls, settings: LimitsSettings) -> TenantLimits:
        return cls(**{name: getattr(settings, name) for name in TENANT_LIMITS})

    def with_overrides(self, overrides: dict[str, Any]) -> TenantLimits:
        """Overrides of unknown names are ignored (a newer replica may have written them)."""
        known = {k: v for k, v in overrides.items() if k in TENANT_LIMITS}
        return replace(self, **known) if known else self


TENANT_LIMITS = frozenset(f.name for f in fields(TenantLimits))
"""The settings a tenant may override."""
