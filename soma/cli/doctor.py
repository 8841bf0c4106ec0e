"""`soma doctor`: the effective configuration, and a verdict for every backend it names.

The verdicts come from the running server's `GET /v1/health` with the caller's key (a platform
admin key also gets each detail): those are the configured adapters' own health checks, run
where the adapters run, with the server's credentials and network. Probing the backends again
from the CLI would duplicate every adapter's check and could disagree with what the server
sees (another host, another network namespace); it would also need the backends' secrets on
the operator's machine. The configuration is read with `soma.config`, the server's own loader,
so the backends named are the ones this directory's `soma.toml` and `SOMA_*` select.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from soma.cli.api import Api, ApiError
from soma.cli.output import Output
from soma.config import ClientSettings, ConfigError, Settings, load_settings
from soma.core.redact import redact_text

BACKENDS = (
    ("database", "database"),
    ("bus", "bus"),
    ("cache", "cache"),
    ("policy", "policy"),
    ("models", "llm"),
    ("sandbox", "tools"),
)
"""Each backend the configuration names, and the platform service whose health covers it."""
VERDICTS = {"healthy": "ok", "degraded": "warn", "starting": "warn"}


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str
    detail: str

    def json(self) -> dict[str, str]:
        return {"check": self.name, "verdict": self.verdict, "detail": self.detail}


def configured(settings: Settings) -> dict[str, str]:
    """One line per backend: what the effective configuration selects (no secrets)."""
    database = settings.database_url
    bus: str = settings.bus.backend
    if bus == "kafka":
        bus = f"kafka {settings.bus.kafka.bootstrap_servers}"
    policy: str = settings.policy.engine
    if policy == "opa":
        policy = f"opa {settings.policy.opa_url}"
    models = ", ".join(
        f"{name}{'*' if name == settings.llm.default_model else ''}="
        + (f"{m.provider} {m.base_url}" if m.base_url else m.provider)
        for name, m in sorted(settings.llm.models.items())
    )
    return {
        "database": redact_text(database),
        "bus": bus,
        "cache": redact_text(settings.cache.url.get_secret_value()),
        "policy": policy,
        "models": redact_text(models),
        "sandbox": f"{settings.tools.sandbox.isolation} ({settings.tools.sandbox.bwrap})",
    }


def run_checks(api: Api, client: ClientSettings) -> list[Check]:
    checks: list[Check] = []
    try:
        loaded = load_settings()
    except ConfigError as exc:
        checks.append(Check("config", "FAIL", "; ".join(exc.problems)))
        named: dict[str, str] = {}
    else:
        source = str(loaded.config_file) if loaded.config_file else "defaults and SOMA_* only"
        checks.append(Check("config", "ok", f"valid ({source})"))
        named = configured(loaded.settings)
    checks.append(Check("key", *_key_check(api, client)))
    try:
        response = api.http.get("/v1/health")
        report: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        reason = f"{client.url} unreachable: {type(exc).__name__} {exc}".strip()
        checks.append(Check("server", "FAIL", reason))
        for name, _ in BACKENDS:
            checks.append(Check(name, "FAIL", f"{named.get(name, '')}: not checked, no server"))
        return checks
    checks.append(Check("server", _verdict(report.get("status", "")), f"{client.url} "
                        f"{report.get('status')}"))  # fmt: skip
    services = report.get("services", {})
    for name, service in BACKENDS:
        state = services.get(service)
        if state is None:
            checks.append(Check(name, "warn", f"{named.get(name, '')}: {service} not run here"))
            continue
        detail = state.get("detail") or "(details need a platform admin key)"
        verdict = _verdict(state.get("status", ""))
        if verdict != "ok" and not state.get("critical", True):
            verdict = "warn"
        shown = f"{named[name]}: {detail}" if name in named else detail
        checks.append(Check(name, verdict, shown))
    return checks


def _key_check(api: Api, client: ClientSettings) -> tuple[str, str]:
    if client.api_key is None:
        return "FAIL", "no API key (--key, SOMA_API_KEY, a profile or ./.soma/admin.key)"
    try:
        api.get("/v1/agents", limit=1)
    except ApiError as exc:
        return "FAIL", f"from {client.key_source}: {exc.status} {exc.detail}"
    except httpx.HTTPError:
        return "warn", f"from {client.key_source}: not checked, no server"
    try:
        api.get("/v1/admin/keys", limit=1)
    except ApiError:
        return "ok", f"chat key from {client.key_source}"
    return "ok", f"admin key from {client.key_source}"


def _verdict(status: str) -> str:
    return VERDICTS.get(status, "FAIL")


def render(console: Console, checks: list[Check]) -> None:
    table = Table("check", "verdict", "detail", box=None, show_header=False, pad_edge=False)
    styles = {"ok": "green", "warn": "yellow", "FAIL": "bold red"}
    for check in checks:
        verdict = Text(check.verdict, style=styles[check.verdict])
        table.add_row(check.name, verdict, Text(check.detail))
    console.print(table)


def doctor(api: Api, out: Output, args: argparse.Namespace, client: ClientSettings) -> int:
    checks = run_checks(api, client)
    if out.as_json:
        out.json([c.json() for c in checks])
    else:
        render(out.console, checks)
    return 0 if all(c.verdict != "FAIL" for c in checks) else 1
