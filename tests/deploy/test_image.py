"""The image: hadolint clean (each ignore explained), non-root, one entry, the release version."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

from soma.version import VERSION
from tests.support.deploy_tools import DEPLOY, ROOT, tool

DOCKERFILE = DEPLOY / "Dockerfile"


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [str(tool("hadolint")), "--format", "json", "--failure-threshold", "style", DOCKERFILE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(result.stdout) == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_every_hadolint_ignore_is_explained_by_the_comment_above() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    ignores = [(n, line) for n, line in enumerate(lines) if "hadolint ignore=" in line]
    assert ignores, "the Dockerfile has no ignores: drop this test's premise"
    for number, line in ignores:
        rules = re.findall(r"DL\d{4}|SC\d{4}", line)
        explanation = lines[number - 1]
        assert explanation.startswith("# ") and "hadolint" not in explanation, line
        for rule in rules:
            assert rule in "\n".join(lines[:number]), f"{rule} is ignored without a reason"


def test_image_is_non_root_with_the_single_entry_and_a_live_probe() -> None:
    text = DOCKERFILE.read_text()
    final = text[text.rindex("\nFROM ") :]
    assert "\nUSER 10001:10001\n" in final
    assert 'ENTRYPOINT ["python", "-m", "orchestrator.main"]' in final
    assert "HEALTHCHECK" in final and "/v1/health/live" in final
    assert 'VOLUME ["/var/lib/soma"]' in final
    # The compiler stays in the builder stage.
    assert "g++" not in final and "cmake" not in final


def test_image_version_is_the_release_version() -> None:
    assert f"ARG VERSION={VERSION}\n" in DOCKERFILE.read_text()


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
            assert (ROOT / source).exists(), f"{source} is copied but does not exist"


def test_changelog_names_the_release_version() -> None:
    headings = [
        line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")
    ]
    assert headings[0] == f"## {VERSION}"


def test_package_version_is_the_release_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == VERSION
