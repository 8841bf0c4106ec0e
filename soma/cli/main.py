"""`soma`: parse the command line, find the server and key, run one command, map errors to
one line on stderr and an exit code (1: the API refused or failed, 2: usage or configuration,
3: the server could not be reached)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import httpx
from rich.console import Console

from soma.cli.api import Api, ApiError
from soma.cli.chat import chat
from soma.cli.doctor import doctor
from soma.cli.output import Output
from soma.cli.resources import add_resources
from soma.config import ConfigError, load_client_settings

EXIT_API = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="soma",
        description="Talk to a SomaAgent01 server. The server and key come from --url/--key, "
        "SOMA_URL/SOMA_API_KEY, a profile (SOMA_PROFILES file, --profile), or the local "
        "server's configuration and its ./.soma/admin.key.",
    )
    root.add_argument("--url", help="server URL, e.g. http://127.0.0.1:8080")
    root.add_argument("--key", help="API key (prefer SOMA_API_KEY: flags show in ps)")
    root.add_argument("--profile", help="a profile of the profiles file")
    root.add_argument("--json", action="store_true", help="print the API's JSON")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    talk = commands.add_parser("chat", help="an interactive chat in the terminal")
    talk.add_argument("--agent", help="agent of a new session (default: assistant)")
    talk.add_argument("--session", help="continue this session")
    talk.set_defaults(handler=chat)
    commands.add_parser("doctor", help="check the configuration and every backend")
    add_resources(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    errors = Console(stderr=True, highlight=False)
    try:
        client = load_client_settings(args.url, args.key, args.profile)
    except ConfigError as exc:
        errors.print(f"soma: {'; '.join(exc.problems)}", markup=False)
        return EXIT_USAGE
    out = Output(Console(highlight=False), args.json)
    api = Api(client)
    try:
        if args.command == "doctor":
            return doctor(api, out, args, client)
        if client.api_key is None:
            errors.print("soma: no API key: pass --key, set SOMA_API_KEY, use a profile, or "
                         "run where ./.soma/admin.key is", markup=False)  # fmt: skip
            return EXIT_USAGE
        code: int = args.handler(api, out, args)
        return code
    except ApiError as exc:
        errors.print(f"soma: {exc.status} {exc.detail}", markup=False)
        return EXIT_API
    except httpx.TransportError as exc:
        errors.print(f"soma: cannot reach {client.url}: {type(exc).__name__} {exc}", markup=False)
        return EXIT_UNREACHABLE
    finally:
        api.close()
