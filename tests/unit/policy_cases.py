"""The shared table of policy cases (ARCHITECTURE §10): every engine must give these answers.

Extend `CASES` when a policy rule is added; the suites run it on the embedded engine and
through the OPA adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from soma.policy import Decision, PolicyInput, Subject

CHAT = ("chat",)
ADMIN = ("admin",)
NONE: tuple[str, ...] = ()
ALLOWED = Decision(allow=True, require_approval=False, reason="allowed")
APPROVAL = Decision(allow=False, require_approval=True, reason="tool requires approval")


def deny(reason: str) -> Decision:
    return Decision(allow=False, require_approval=False, reason=reason)


@dataclass(frozen=True)
class PolicyCase:
    name: str
    input: PolicyInput
    expected: Decision


def ask(
    action: str,
    scopes: tuple[str, ...] = CHAT,
    tenant: str = "t1",
    resource: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> PolicyInput:
    return PolicyInput(
        action=action,
        tenant=tenant,
        subject=Subject(key_id="key-1", scopes=scopes),
        resource=resource or {},
        context=context or {},
    )


DANGEROUS = {"tenant_id": "t1", "tool": "python", "requires_approval": True}

CASES: list[PolicyCase] = [
    # scopes: chat actions need `chat` or `admin`
    PolicyCase("chat key sends a message", ask("conversation.send"), ALLOWED),
    PolicyCase("admin key sends a message", ask("conversation.send", ADMIN), ALLOWED),
    PolicyCase(
        "keyless scopes cannot send", ask("conversation.send", NONE), deny("missing scope chat")
    ),
    PolicyCase("chat reads memory", ask("memory.read"), ALLOWED),
    PolicyCase("chat writes memory", ask("memory.write"), ALLOWED),
    PolicyCase("chat uploads", ask("upload.create"), ALLOWED),
    PolicyCase("no scope cannot read memory", ask("memory.read", NONE), deny("missing scope chat")),
    PolicyCase(
        "no scope cannot write memory", ask("memory.write", NONE), deny("missing scope chat")
    ),
    PolicyCase("no scope cannot upload", ask("upload.create", NONE), deny("missing scope chat")),
    PolicyCase(
        "scopes are case-sensitive", ask("conversation.send", ("CHAT",)), deny("missing scope chat")
    ),
    PolicyCase(
        "unrelated scope is not chat", ask("memory.read", ("metrics",)), deny("missing scope chat")
    ),
    # admin actions need `admin`
    PolicyCase("chat key cannot administer", ask("admin.keys.create"), deny("missing scope admin")),
    PolicyCase("admin key administers", ask("admin.keys.create", ADMIN), ALLOWED),
    PolicyCase("admin with chat too", ask("admin.audit.read", ("chat", "admin")), ALLOWED),
    # deny by default
    PolicyCase("unknown action", ask("files.destroy", ADMIN), deny("no rule allows files.destroy")),
    PolicyCase(
        "bare admin is not an admin action", ask("admin", ADMIN), deny("no rule allows admin")
    ),
    PolicyCase("empty action", ask("", ADMIN), deny("action must be a non-empty string")),
    PolicyCase(
        "empty tenant", ask("memory.read", tenant=""), deny("tenant must be a non-empty string")
    ),
    # tenancy
    PolicyCase("own tenant's resource", ask("memory.read", resource={"tenant_id": "t1"}), ALLOWED),
    PolicyCase(
        "other tenant's resource",
        ask("memory.read", resource={"tenant_id": "t2"}),
        deny("cross-tenant access"),
    ),
    PolicyCase(
        "admin cannot cross tenants",
        ask("admin.keys.create", ADMIN, resource={"tenant_id": "t2"}),
        deny("cross-tenant access"),
    ),
    PolicyCase(
        "null tenant_id is not a match",
        ask("memory.write", resource={"tenant_id": None}),
        deny("cross-tenant access"),
    ),
    PolicyCase("resource without tenant_id", ask("upload.create", resource={"size": 10}), ALLOWED),
    # tools and approvals
    PolicyCase("safe tool runs", ask("tool.execute", resource={"tool": "memory_search"}), ALLOWED),
    PolicyCase("dangerous tool needs approval", ask("tool.execute", resource=DANGEROUS), APPROVAL),
    PolicyCase(
        "approved dangerous tool runs",
        ask("tool.execute", resource=DANGEROUS, context={"approved": True}),
        ALLOWED,
    ),
    PolicyCase(
        "approval must be the boolean true",
        ask("tool.execute", resource=DANGEROUS, context={"approved": "true"}),
        APPROVAL,
    ),
    PolicyCase(
        "explicitly not dangerous",
        ask("tool.execute", resource={"requires_approval": False}),
        ALLOWED,
    ),
    PolicyCase(
        "dangerous tool without scope is denied, not parked",
        ask("tool.execute", NONE, resource=DANGEROUS),
        deny("missing scope chat"),
    ),
    PolicyCase(
        "dangerous tool of another tenant",
        ask("tool.execute", resource={**DANGEROUS, "tenant_id": "t9"}),
        deny("cross-tenant access"),
    ),
]
