"""checkov (IaC static analysis) over the rendered chart and the Dockerfile: clean, and each
skipped check justified in deploy/checkov.yaml."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_helm import RENDER
from tests.support.deploy_tools import DEPLOY, checkov

CONFIG = DEPLOY / "checkov.yaml"


def scan(*target: str) -> dict[str, Any]:
    result = subprocess.run(
        # --skip-download: no call home for guidelines; the checks themselves are local.
        [str(checkov()), *target, "--config-file", str(CONFIG), "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def failures(report: dict[str, Any]) -> list[str]:
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    assert report["summary"]["passed"] > 0
    return [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]


def test_dockerfile_has_no_finding() -> None:
    report = scan("-f", str(DEPLOY / "Dockerfile"), "--framework", "dockerfile")
    assert failures(report) == []


@pytest.mark.parametrize("variant", sorted(RENDER.VARIANTS))
def test_rendered_chart_has_no_finding(variant: str, tmp_path: Path) -> None:
    for name, text in RENDER.render(variant).items():
        (tmp_path / name).write_text(text)
    report = scan("-d", str(tmp_path), "--framework", "kubernetes")
    assert failures(report) == []


def test_every_skipped_check_has_its_reason_above_it() -> None:
    lines = CONFIG.read_text().splitlines()
    skipped = [(n, line) for n, line in enumerate(lines) if re.match(r"\s*- CKV", line)]
    assert skipped
    for number, line in skipped:
        assert lines[number - 1].strip().startswith("#"), f"{line.strip()} has no reason"
