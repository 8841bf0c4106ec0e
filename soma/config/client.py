"""Where the `soma` CLI finds its server and key: flags, `SOMA_URL`/`SOMA_API_KEY`, a profile
file, else the embedded default (the local server's address and its bootstrap admin key)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from soma.config.loader import ConfigError, load_settings

PROFILES_ENV = "SOMA_PROFILES"
PROFILE_ENV = "SOMA_PROFILE"
DEFAULT_PROFILE = "default"
_ANY_ADDRESS = {"0.0.0.0", "::", ""}


@dataclass(frozen=True)
class ClientSettings:
    """The server and key a client uses, and where each came from (for `soma doctor`)."""

    url: str
    api_key: SecretStr | None
    url_source: str
    key_source: str


def default_profiles_file(environ: Mapping[str, str]) -> Path:
    if environ.get(PROFILES_ENV):
        return Path(environ[PROFILES_ENV])
    home = Path(environ.get("HOME") or Path.home())
    return home / ".config" / "soma" / "profiles.toml"


def load_client_settings(
    url: str | None = None,
    key: str | None = None,
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClientSettings:
    """Resolve each of url and key on its own: flag > env > profile > embedded default."""
    env = os.environ if environ is None else environ
    chosen = _profile(profile or env.get(PROFILE_ENV), default_profiles_file(env))
    found_url = _first(
        (url, "--url"), (env.get("SOMA_URL"), "SOMA_URL"), (chosen.get("url"), "profile")
    )
    found_key = _first(
        (key, "--key"), (env.get("SOMA_API_KEY"), "SOMA_API_KEY"), (chosen.get("key"), "profile")
    )
    if found_key is None and chosen.get("key_file"):
        path = Path(str(chosen["key_file"])).expanduser()
        found_key = (_read_key(path), f"profile key_file {path}")
    if found_url is None or found_key is None:
        local_url, key_file = _embedded_default(env)
        found_url = found_url or (local_url, "the local server's configuration")
        if found_key is None and key_file.is_file():
            found_key = (_read_key(key_file), f"key file {key_file}")
    secret = SecretStr(found_key[0]) if found_key else None
    return ClientSettings(
        url=found_url[0].rstrip("/"),
        api_key=secret,
        url_source=found_url[1],
        key_source=found_key[1] if found_key else "none",
    )


def _first(*candidates: tuple[Any, str]) -> tuple[str, str] | None:
    for value, source in candidates:
        if value:
            return str(value), source
    return None


def _profile(name: str | None, path: Path) -> dict[str, Any]:
    """The named profile (an error when missing), else `default` when the file has one."""
    if not path.is_file():
        if name:
            raise ConfigError([f"profile {name!r}: no profiles file at {path}"])
        return {}
    try:
        with path.open("rb") as handle:
            profiles = tomllib.load(handle).get("profiles", {})
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"profiles file {path}: invalid TOML: {exc}"]) from None
    chosen = profiles.get(name or DEFAULT_PROFILE)
    if name and not isinstance(chosen, dict):
        raise ConfigError([f"profile {name!r} is not in {path}"])
    return chosen if isinstance(chosen, dict) else {}


def _read_key(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError([f"key file {path}: {exc.strerror}"]) from None
    if not text:
        raise ConfigError([f"key file {path} is empty"])
    return text


def _embedded_default(env: Mapping[str, str]) -> tuple[str, Path]:
    """The server this directory's configuration describes, and its bootstrap key file."""
    settings = load_settings(environ=env).settings
    host = "127.0.0.1" if settings.http.host in _ANY_ADDRESS else settings.http.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http.port}", settings.bootstrap_key_file
