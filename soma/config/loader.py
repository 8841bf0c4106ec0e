"""Build `Settings` from flags, `SOMA_*` environment, a TOML file and defaults, with provenance."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import EnvSettingsSource, SettingsError

from soma.config.settings import Settings

DEFAULT_CONFIG_FILE = Path("soma.toml")
_SECRET_HINTS = ("url", "key", "password", "secret", "token")


class ConfigError(Exception):
    """Invalid configuration; `problems` holds one human-readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    sources: dict[str, str]
    """Dotted key → `default` | `file` | `env` | `flag`."""
    config_file: Path | None


def load_settings(
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Resolve the effective settings: flags > env > file > defaults."""
    env = os.environ if environ is None else environ
    path = _choose_file(config_file, env)
    file_data = _read_toml(path) if path is not None else {}
    env_data = _read_env(env)
    flag_data = _nest(dict(flags or {}))
    merged: dict[str, Any] = {}
    for layer in (file_data, env_data, flag_data):
        _deep_merge(merged, layer)
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError([_describe(err) for err in exc.errors()]) from None
    layers = {"file": _flatten(file_data), "env": _flatten(env_data), "flag": _flatten(flag_data)}
    sources = {key: _source_of(key, layers) for key in _flatten(settings.model_dump())}
    return LoadedSettings(settings=settings, sources=sources, config_file=path)


def render(loaded: LoadedSettings) -> str:
    """The effective configuration as TOML-like lines, secrets redacted, each with its source."""
    lines = [f"# config file: {loaded.config_file or 'none'}"]
    flat = _flatten(loaded.settings.model_dump())
    for key in sorted(flat):
        value = flat[key]
        shown = '"**********"' if isinstance(value, SecretStr) else _toml_value(value)
        lines.append(f"{key} = {shown}  # {loaded.sources.get(key, 'default')}")
    return "\n".join(lines)


def _choose_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        return explicit
    from_env = env.get("SOMA_CONFIG")
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"config file {path}: not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config file {path}: invalid TOML: {exc}"]) from None


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    source = EnvSettingsSource(Settings, case_sensitive=False)
    source.env_vars = {k.lower(): v for k, v in env.items() if k.upper().startswith("SOMA_")}
    source.env_vars.pop("soma_config", None)
    try:
        data = source()
    except SettingsError as exc:
        raise ConfigError([f"environment: {exc}"]) from None
    return _lower_keys(data)


def _lower_keys(data: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): _lower_keys(v) if isinstance(v, dict) else v for k, v in data.items()}


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _deep_merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _source_of(key: str, layers: Mapping[str, Mapping[str, Any]]) -> str:
    parts = key.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    for name in ("flag", "env", "file"):
        if prefixes & layers[name].keys():
            return name
    return "default"


def _describe(error: Any) -> str:
    loc = ".".join(str(part) for part in error["loc"]) or "(root)"
    msg = str(error["msg"]).removeprefix("Value error, ")
    if any(hint in loc for hint in _SECRET_HINTS) or error["type"] == "extra_forbidden":
        return f"{loc}: {msg}"
    return f"{loc}: {msg} (got {error['input']!r})"


def _toml_value(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
