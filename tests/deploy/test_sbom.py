"""`make sbom`: a CycloneDX document naming every package the image installs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from soma.version import VERSION
from tests.deploy.test_lock import LOCKS, pins
from tests.support.deploy_tools import ROOT, tool


def test_sbom_lists_every_locked_package_of_the_image(tmp_path: Path) -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^sbom:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None
    assert "cyclonedx-py requirements requirements/image.lock" in recipe[1].replace("\\\n", "")
    out = tmp_path / "sbom.cdx.json"
    subprocess.run(
        [
            str(tool("cyclonedx-py")),
            "requirements",
            "requirements/image.lock",
            "--pyproject",
            "pyproject.toml",
            "--of",
            "JSON",
            "--output-reproducible",
            "--validate",
            "-o",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    sbom = json.loads(out.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == "somaagent01"
    assert sbom["metadata"]["component"]["version"] == VERSION
    listed = {(c["name"].lower(), c["version"]) for c in sbom["components"]}
    for name, versions in pins(LOCKS / "image.lock").items():
        for version in versions:
            assert (name, version) in {(n.replace("_", "-"), v) for n, v in listed}, name
    assert all(c["purl"].startswith("pkg:pypi/") for c in sbom["components"])
