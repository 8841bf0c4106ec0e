"""`python -m orchestrator.main`: the single entry point of the platform."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop
from opentelemetry import trace

from orchestrator.manifest import build_registry
from orchestrator.orchestrator import SomaOrchestrator, build_plan
from orchestrator.registry import RegistryError
from soma.config import ConfigError, LoadedSettings, load_settings, render
from soma.config.settings import Settings
from soma.core.errors import SomaError
from soma.core.redact import redact_text
from soma.gateway.auth.reset import reset_admin_key
from soma.gateway.tenancy import Tenancy
from soma.observability.logging import configure_logging
from soma.observability.metrics import Metrics
from soma.observability.tracing import create_tracer_provider
from soma.storage import DatabaseService
from soma.version import VERSION

EXIT_CONFIG = 2


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.main",
        description="Run the SomaAgent01 platform (all services, or the subset in --services).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="validate and print the plan")
    mode.add_argument("--check-config", action="store_true", help="validate the configuration")
    mode.add_argument("--print-config", action="store_true", help="print the effective config")
    mode.add_argument(
        "--reset-admin-key",
        action="store_true",
        help="offline recovery: migrate if needed, issue a new admin key of the default tenant, "
        "write it to auth.bootstrap_key_file and exit",
    )
    mode.add_argument(
        "--migrate-only",
        action="store_true",
        help="upgrade the database schema to head and exit (the cluster's migrations job)",
    )
    mode.add_argument(
        "--downgrade-to",
        metavar="REVISION",
        help="rollback: downgrade the database schema to REVISION ('base': empty) and exit",
    )
    mode.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    parser.add_argument("--config", type=Path, help="TOML config file (default ./soma.toml)")
    parser.add_argument("--host", dest="http.host", help="listen address")
    parser.add_argument("--port", dest="http.port", help="listen port")
    parser.add_argument("--services", help="comma list of services this replica runs")
    parser.add_argument("--data-dir", dest="data_dir", help="data directory")
    parser.add_argument("--log-level", dest="observability.log_level")
    parser.add_argument("--log-format", dest="observability.log_format")
    parser.add_argument("--shutdown-timeout", dest="shutdown_timeout")
    return parser.parse_args(list(argv))


def flags_of(args: argparse.Namespace) -> dict[str, Any]:
    skip = {
        "dry_run",
        "check_config",
        "print_config",
        "reset_admin_key",
        "migrate_only",
        "downgrade_to",
        "config",
    }
    return {k: v for k, v in vars(args).items() if k not in skip and v is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        loaded = load_settings(flags_of(args), args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {redact_text(problem)}", file=sys.stderr)
        return EXIT_CONFIG
    if args.print_config:
        # SecretStr values are masked by render; credentials inside plain URLs are masked here.
        print(redact_text(render(loaded)))
        return 0
    if args.check_config:
        print("configuration is valid")
        return 0
    if args.dry_run:
        return asyncio.run(dry_run(loaded))
    settings = loaded.settings
    configure_logging(settings.observability.log_format, settings.observability.log_level)
    if args.reset_admin_key:
        code = asyncio.run(reset_admin(settings))
        logging.shutdown()
        return code
    if args.migrate_only or args.downgrade_to is not None:
        code = asyncio.run(migrate_schema(settings, args.downgrade_to))
        logging.shutdown()
        return code
    provider = create_tracer_provider(settings.observability.otlp_endpoint)
    trace.set_tracer_provider(provider)
    try:
        registry = build_registry()
    except RegistryError as exc:
        logging.getLogger("soma.orchestrator").error("invalid service manifest: %s", exc)
        return EXIT_CONFIG
    orchestrator = SomaOrchestrator(settings, registry, Metrics(), provider.get_tracer("soma"))
    # Native code (llama.cpp, ONNX Runtime, SQLite, drivers) can crash the process: leave the
    # Python stack of every thread on stderr instead of a silent exit.
    faulthandler.enable()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(_run_checked(orchestrator, settings))
    finally:
        provider.shutdown()
    logging.shutdown()
    return code


async def _run_checked(orchestrator: SomaOrchestrator, settings: Settings) -> int:
    try:
        return await orchestrator.run()
    except RegistryError as exc:
        logging.getLogger("soma.orchestrator").error("invalid service selection: %s", exc)
        return EXIT_CONFIG


async def reset_admin(settings: Settings) -> int:
    """`--reset-admin-key`: the database's own migrations, then a new key in the key file."""
    log = logging.getLogger("soma.orchestrator")
    database = DatabaseService(settings, Metrics())
    try:
        await database.start()
        tenancy = Tenancy(database.database, settings.llm.default_model)
        await reset_admin_key(database.database, tenancy, settings.bootstrap_key_file)
    except Exception as exc:
        # One line for the operator; SomaError messages are already written for them.
        reason = str(exc) if isinstance(exc, SomaError) else f"{type(exc).__name__}: {exc}"
        log.error("reset-admin-key failed: %s", reason)
        return 1
    finally:
        await database.stop()
    return 0


async def migrate_schema(settings: Settings, downgrade_to: str | None) -> int:
    """`--migrate-only` (to head) or `--downgrade-to REV`: the schema step alone, then exit."""
    log = logging.getLogger("soma.orchestrator")
    database = DatabaseService(settings, Metrics())
    where = DatabaseService.describe(settings)
    try:
        if downgrade_to is None:
            revision: str | None = await database.migrate()
        else:
            revision = await database.downgrade(downgrade_to)
    except SomaError as exc:
        log.error("%s", exc)
        return 1
    finally:
        await database.engine.dispose()
    log.info("database %s is at revision %s (release %s)", where, revision or "base", VERSION)
    return 0


async def dry_run(loaded: LoadedSettings) -> int:
    """Resolve and construct the plan without opening a socket or writing a file."""
    settings = loaded.settings
    try:
        registry = build_registry()
        states = build_plan(registry, settings, Metrics())
    except RegistryError as exc:
        print(f"plan error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        print(f"plan error: cannot construct a service: {exc}", file=sys.stderr)
        return 1
    selected = set(settings.services or registry.names)
    print(f"config file: {loaded.config_file or 'none'}")
    print(f"http: {settings.http.host}:{settings.http.port}")
    print(f"roles: {', '.join(settings.services) if settings.services else 'all'}")
    print("services in start order:")
    for index, state in enumerate(states, start=1):
        definition = state.definition
        role = "selected" if definition.name in selected else "dependency"
        kind = "critical" if definition.critical else "non-critical"
        needs = ", ".join(definition.depends_on) or "-"
        backend = redact_text(definition.describe(settings))
        print(
            f"  {index}. {definition.name:<14} {kind:<12} {role:<10} needs: {needs:<20} {backend}"
        )
    print("plan is valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
