"""`soma agents|sessions|runs|approvals|keys|tenants|memories|tools ...`: list, show, create,
change and delete what the API allows, one HTTP call (or one paginated list) per command."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from soma.cli.api import Api, check, present
from soma.cli.output import Output
from soma.cli.tail import tail

Handler = Callable[[Api, Output, argparse.Namespace], int]

AGENT_COLUMNS = ("id", "name", "model", "tools", "require_approval", "memory")
AGENT_FIELDS = (*AGENT_COLUMNS, "instructions", "max_steps", "run_timeout_s", "created_at")
SESSION_COLUMNS = ("id", "agent_id", "title", "created_at")
MESSAGE_COLUMNS = ("seq", "role", "content", "run_id")
RUN_FIELDS = ("id", "status", "session_id", "attempt", "usage", "error", "created_at")
APPROVAL_COLUMNS = ("id", "tool", "args", "status", "run_id", "created_at")
KEY_COLUMNS = ("id", "name", "prefix", "scopes", "tenant_id", "revoked_at")
TENANT_COLUMNS = ("id", "name", "created_at")
MEMORY_COLUMNS = ("id", "content", "kind", "tags", "agent_id", "user", "score")
TOOL_COLUMNS = ("name", "source", "idempotent", "description")


def add_resources(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers every resource command; each sets `handler` on its namespace."""
    _agents(_group(commands, "agents", "agents of your tenant"))
    _sessions(_group(commands, "sessions", "chat sessions"))
    _runs(_group(commands, "runs", "runs: status, events, cancel"))
    _approvals(_group(commands, "approvals", "tool calls waiting for a decision"))
    _keys(_group(commands, "keys", "API keys (admin)"))
    _tenants(_group(commands, "tenants", "tenants (platform admin)"))
    _memories(_group(commands, "memories", "long-term memories"))
    _cmd(_group(commands, "tools", "the tool catalog"), "list", _tools_list)


def _group(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    parser = commands.add_parser(name, help=help, description=help)
    return parser.add_subparsers(dest="action", required=True, metavar="ACTION")


def _cmd(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    *positional: str,
) -> argparse.ArgumentParser:
    parser = group.add_parser(name)
    for arg in positional:
        parser.add_argument(arg)
    if name == "list":
        parser.add_argument("--limit", type=int, default=100, help="at most this many")
    parser.set_defaults(handler=handler)
    return parser


def _agent_options(parser: argparse.ArgumentParser, creating: bool) -> None:
    parser.add_argument("--instructions")
    parser.add_argument("--model", help="a model declared in llm.models")
    parser.add_argument("--tool", action="append", dest="tools", help="tool or pattern (repeat)")
    parser.add_argument("--approve", action="append", dest="require_approval",
                        help="calls of this tool wait for approval (repeat)")  # fmt: skip
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--max-steps", type=int)
    if not creating:
        parser.add_argument("--name", dest="new_name", help="rename")


def _agent_body(args: argparse.Namespace) -> dict[str, Any]:
    fields = ("instructions", "model", "tools", "require_approval", "memory", "max_steps")
    body = {f: getattr(args, f) for f in fields if getattr(args, f) is not None}
    if getattr(args, "new_name", None):
        body["name"] = args.new_name
    return body


def _agents(group: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def list_(api: Api, out: Output, args: argparse.Namespace) -> int:
        out.rows(api.items("/v1/agents", args.limit), AGENT_COLUMNS)
        return 0

    def show(api: Api, out: Output, args: argparse.Namespace) -> int:
        out.record(api.get(f"/v1/agents/{args.agent}"), AGENT_FIELDS)
        return 0

    def create(api: Api, out: Output, args: argparse.Namespace) -> int:
        out.record(api.post("/v1/agents", {"name": args.name, **_agent_body(args)}), AGENT_FIELDS)
        return 0

    def update(api: Api, out: Output, args: argparse.Namespace) -> int:
        out.record(api.patch(f"/v1/agents/{args.agent}", _agent_body(args)), AGENT_FIELDS)
        return 0

    def delete(api: Api, out: Output, args: argparse.Namespace) -> int:
        api.delete(f"/v1/agents/{args.agent}")
        out.done(f"deleted agent {args.agent}")
        return 0

    _cmd(group, "list", list_)
    _cmd(group, "show", show, "agent")
    _agent_options(_cmd(group, "create", create, "name"), creating=True)
    _agent_options(_cmd(group, "update", update, "agent"), creating=False)
    _cmd(group, "delete", delete, "agent")


def _sessions(group: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def list_(api: Api, out: Output, args: argparse.Namespace) -> int:
        out.rows(api.items("/v1/sessions", args.limit), SESSION_COLUMNS)
        return 0

    def create(api: Api, out: Output, args: argparse.Namespace) -> int:
        body = {k: v for k, v in (("agent", args.agent), ("title", args.title)) if v}
        out.record(api.post("/v1/sessions", body), SESSION_COLUMNS)
        return 0

    def delete(api: Api, out: Output, args: argparse.Namespace) -> int:
        api.delete(f"/v1/sessions/{args.session}")
        out.done(f"deleted session {args.session}")
        return 0

    def messages(api: Api, out: Output, args: argparse.Namespace) -> int:
        out.rows(api.items(f"/v1/sessions/{args.session}/messages", 10_000), MESSAGE_COLUMNS)
        return 0

    _cmd(group, "list", list_)
    created = _cmd(group, "create", create)
    created.add_argument("--agent", help="agent name or id (default: assistant)")
    created.add_argument("--title")
    _cmd(group, "delete", delete, "session")
    _cmd(group, "messages", messages, "session")


def _runs(group: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def show(api: Api, out: Output, args: argparse.Namespace) -> int:
        out.record(api.get(f"/v1/runs/{args.run}"), RUN_FIELDS)
        return 0

    def cancel(api: Api, out: Output, args: argparse.Namespace) -> int:
        run = api.post(f"/v1/runs/{args.run}/cancel")
        out.done(f"run {args.run}: {run['status']}", run)
        return 0

    _cmd(group, "show", show, "run")
    _cmd(group, "cancel", cancel, "run")
    tailing = _cmd(group, "tail", tail, "run")
    tailing.add_argument("--after", type=int, help="only events after this id")


def _approvals(group: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def list_(api: Api, out: Output, args: argparse.Namespace) -> int:
        found = api.items("/v1/approvals", args.limit, status=args.status)
        out.rows(found, APPROVAL_COLUMNS)
        return 0

    def decide(decision: str) -> Handler:
        def handler(api: Api, out: Output, args: argparse.Namespace) -> int:
            body = {"decision": decision, "reason": args.reason}
            decided = api.post(f"/v1/approvals/{args.approval}", body)
            out.done(f"approval {args.approval}: {decided['status']}", decided)
            return 0

        return handler

    listing = _cmd(group, "list", list_)
    listing.add_argument("--status", choices=("pending", "approved", "denied"))
    for name in ("approve", "deny"):
        _cmd(group, name, decide(name), "approval").add_argument("--reason")


def _keys(group: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def list_(api: Api, out: Output, args: argparse.Namespace) -> int:
        out.rows(api.items("/v1/admin/keys", args.limit, tenant_id=args.tenant), KEY_COLUMNS)
        return 0

    def create(api: Api, out: Output, args: argparse.Namespace) -> int:
        body = {"name": args.name, "scopes": args.scopes or ["chat"], "tenant_id": args.tenant}
        created = api.post("/v1/admin/keys", body)
        if out.as_json:
            out.json(created)
        else:
            out.record(created, KEY_COLUMNS)
            out.console.print("key (shown once, store it now):", style="bold")
            out.console.print(created["key"], markup=False, highlight=False, soft_wrap=True)
        return 0

    def revoke(api: Api, out: Output, args: argparse.Namespace) -> int:
        api.delete(f"/v1/admin/keys/{args.key_id}", tenant_id=args.tenant)
        out.done(f"revoked key {args.key_id}")
        return 0

    _cmd(group, "list", list_).add_argument("--tenant", help="another tenant's id")
    created = _cmd(group, "create", create, "name")
    created.add_argument("--scope", action="append", dest="scopes", choices=("chat", "admin"))
    created.add_argument("--tenant", help="another tenant's id (platform admin)")
    _cmd(group, "revoke", revoke, "key_id").add_argument("--tenant")


def _tenants(group: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def list_(api: Api, out: Output, args: argparse.Namespace) -> int:
        out.rows(api.items("/v1/admin/tenants", args.limit), TENANT_COLUMNS)
        return 0

    def create(api: Api, out: Output, args: argparse.Namespace) -> int:
        out.record(api.post("/v1/admin/tenants", {"name": args.name}), TENANT_COLUMNS)
        return 0

    _cmd(group, "list", list_)
    _cmd(group, "create", create, "name")


def _memories(group: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def list_(api: Api, out: Output, args: argparse.Namespace) -> int:
        found = api.get("/v1/memories", query=args.query, limit=args.limit, agent=args.agent,
                        user=args.user)  # fmt: skip
        out.rows(found["items"], MEMORY_COLUMNS)
        return 0

    def add(api: Api, out: Output, args: argparse.Namespace) -> int:
        body = {"content": args.content, "kind": args.kind, "tags": args.tags,
                "agent": args.agent, "user": args.user}  # fmt: skip
        created = api.post("/v1/memories", {k: v for k, v in body.items() if v is not None})
        out.record(created, MEMORY_COLUMNS)
        return 0

    def delete(api: Api, out: Output, args: argparse.Namespace) -> int:
        api.delete(f"/v1/memories/{args.memory}")
        out.done(f"deleted memory {args.memory}")
        return 0

    listing = _cmd(group, "list", list_)
    listing.add_argument("--query", help="search by meaning")
    added = _cmd(group, "add", add, "content")
    added.add_argument("--kind")
    added.add_argument("--tag", action="append", dest="tags")
    for parser in (listing, added):
        parser.add_argument("--agent")
        parser.add_argument("--user")

    def forget(api: Api, out: Output, args: argparse.Namespace) -> int:
        scope = {"user": args.user, "agent": args.agent}
        forgotten = api.request("DELETE", "/v1/memories", params=present(scope))
        out.done(f"forgot {forgotten['deleted']} memories of user {args.user}", forgotten)
        return 0

    def export(api: Api, out: Output, args: argparse.Namespace) -> int:
        scope = {"user": args.user, "agent": args.agent}
        response = api.http.get("/v1/memories/export", params=present(scope))
        check(response)
        out.console.file.write(response.text)
        return 0

    _cmd(group, "delete", delete, "memory")
    forgetting = _cmd(group, "forget", forget)
    forgetting.add_argument("--user", required=True, help="every memory of this end user goes")
    exporting = _cmd(group, "export", export)
    for parser in (forgetting, exporting):
        parser.add_argument("--agent")
    exporting.add_argument("--user")


def _tools_list(api: Api, out: Output, args: argparse.Namespace) -> int:
    catalog = api.get("/v1/tools")
    if out.as_json:
        out.json(catalog)
        return 0
    out.rows(catalog["items"][: args.limit], TOOL_COLUMNS)
    out.console.print(f"sandbox isolation: {catalog['isolation']}", markup=False)
    return 0
