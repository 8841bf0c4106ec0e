"""Policy ports: the decision input and output, the fail-closed engine and its backends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

DECISION_PATH = "soma/policy/decision"
"""Where the decision lives in the policy data tree (`data.soma.policy.decision`)."""


class PolicyError(Exception):
    """A backend could not produce a decision; the engine turns it into a deny."""


@dataclass(frozen=True, slots=True)
class Subject:
    key_id: str
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyInput:
    action: str
    tenant: str
    subject: Subject
    resource: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The `input` document the policies see (ARCHITECTURE §10)."""
        return {
            "action": self.action,
            "tenant": self.tenant,
            "subject": {"key_id": self.subject.key_id, "scopes": list(self.subject.scopes)},
            "resource": dict(self.resource),
            "context": dict(self.context),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    require_approval: bool
    reason: str

    @property
    def result(self) -> str:
        """`allow`, `approval` or `deny`, as counted in the metrics."""
        if self.require_approval:
            return "approval"
        return "allow" if self.allow else "deny"


class PolicyEngine(Protocol):
    """What the platform asks; never raises: any failure is a deny (fail closed)."""

    async def decide(self, input: PolicyInput) -> Decision: ...


class PolicyBackend(Protocol):
    """One way to evaluate the policies; raises `PolicyError` when it cannot."""

    @property
    def description(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def check(self) -> str:
        """A health detail, or `PolicyError` when the backend cannot decide now."""
        ...

    async def evaluate(self, input: PolicyInput) -> Decision: ...


def decision_from_result(value: object) -> Decision:
    """Validate a policy result strictly: anything but the exact shape is an error."""
    if value is None:
        raise PolicyError("the policy defines no decision for this input (undefined)")
    if not isinstance(value, dict):
        raise PolicyError(f"decision is {type(value).__name__}, not an object")
    allow, approval, reason = (value.get(k) for k in ("allow", "require_approval", "reason"))
    if not isinstance(allow, bool) or not isinstance(approval, bool):
        raise PolicyError("decision.allow and decision.require_approval must be booleans")
    if not isinstance(reason, str):
        raise PolicyError("decision.reason must be a string")
    # "Allowed once approved" is not allowed yet: approval always wins over allow.
    return Decision(allow=allow and not approval, require_approval=approval, reason=reason)
