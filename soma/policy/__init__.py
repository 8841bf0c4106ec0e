"""PolicyEngine port; embedded Rego (regorus) and OPA-HTTP adapters; the shared rego/ policies."""

from soma.policy.port import Decision, PolicyEngine, PolicyError, PolicyInput, Subject
from soma.policy.service import PolicyService, create_policy, describe

__all__ = [
    "Decision",
    "PolicyEngine",
    "PolicyError",
    "PolicyInput",
    "PolicyService",
    "Subject",
    "create_policy",
    "describe",
]
