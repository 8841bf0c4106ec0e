"""docs/configuration.md is generated from soma.config.Settings and must not drift from it."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from soma.config import load_settings
from tests.support.deploy_tools import ROOT


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_docs", ROOT / "scripts/config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


DOCS = _generator()
ROWS = [row for _, row in DOCS.walk(DOCS.Settings) if row is not None]


def test_configuration_md_is_fresh_and_every_setting_has_a_meaning() -> None:
    text, undocumented = DOCS.generate()
    assert undocumented == [], "add a docstring under these fields in soma/config/settings.py"
    current = (ROOT / "docs/configuration.md").read_text()
    assert current == text, "docs/configuration.md is stale: run `make docs`"


def test_every_setting_is_documented_once() -> None:
    keys = [row.key for row in ROWS]
    assert len(keys) == len(set(keys))
    assert {"data_dir", "http.port", "database.url", "llm.models.<name>.api_key"} <= set(keys)


@pytest.mark.parametrize(
    "row",
    [
        r
        for r in ROWS
        if "<name>" not in r.key
        and r.default.startswith("`")
        and not r.type.startswith(("list", "table"))
    ],
    ids=lambda r: r.key,
)
def test_documented_environment_name_sets_the_key(row: object) -> None:
    key, env, default = row.key, row.env, row.default  # type: ignore[attr-defined]
    value = default.strip("`").replace(",", "")
    loaded = load_settings(environ={env: value})
    assert loaded.sources[key] == "env"
