"""Where the deploy checks find their tools: installed by scripts/install.sh, never optional."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def tool(name: str) -> Path:
    """An executable of the test virtualenv (a missing one is a failure, not a skip)."""
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{name} is not installed in {path.parent}: run scripts/install.sh"
    return path


def checkov() -> Path:
    """checkov lives in its own virtualenv (its pins clash with the platform's)."""
    path = Path(sys.prefix) / "opt" / "checkov" / "bin" / "checkov"
    assert path.is_file(), f"checkov is not installed at {path}: run scripts/install.sh"
    return path
