"""Architecture rules of ARCHITECTURE §2, checked on the source tree."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("soma", "orchestrator")
MAX_LINES = 500


def modules(*packages: str) -> Iterator[Path]:
    for package in packages:
        yield from sorted((ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_tree_has_modules_to_check() -> None:
    assert len(list(modules(*PACKAGES))) > 10


def test_only_soma_config_reads_the_environment() -> None:
    offenders = []
    for path in modules(*PACKAGES):
        if path.is_relative_to(ROOT / "soma" / "config"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.alias) and node.name in ("environ", "getenv"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_no_module_over_500_lines() -> None:
    long = [
        f"{p.relative_to(ROOT)} ({n})"
        for p in modules(*PACKAGES)
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert long == []


def test_soma_never_imports_orchestrator() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in modules("soma")
        if any(n == "orchestrator" or n.startswith("orchestrator.") for n in imported(p))
    ]
    assert offenders == []


def test_gateway_and_runtime_never_import_each_other() -> None:
    offenders = []
    for this, other in (("gateway", "runtime"), ("runtime", "gateway")):
        for path in sorted((ROOT / "soma" / this).rglob("*.py")):
            if any(n == f"soma.{other}" or n.startswith(f"soma.{other}.") for n in imported(path)):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_cli_is_a_client_of_the_public_api_only() -> None:
    """`soma` talks HTTP: of the platform it may use its configuration and redaction only."""
    allowed = ("soma.cli", "soma.config", "soma.core.redact")
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "soma" / "cli").rglob("*.py"))
        for name in sorted(imported(path))
        if (name == "soma" or name.startswith("soma."))
        and not any(name == a or name.startswith(a + ".") for a in allowed)
    ]
    assert offenders == []
