"""Render the Helm chart with Helm's own engine (helm-python-sdk, no helm binary).

`python scripts/render_k8s.py` writes deploy/k8s/ from the chart's default values (`make k8s`);
`--check` only compares and exits 1 when deploy/k8s/ is not a fresh render.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "somaagent"
OUT = ROOT / "deploy" / "k8s"
RELEASE = "somaagent"
NAMESPACE = "somaagent"
VARIANTS = {
    "default": None,
    "api-only": "ci/api-only-values.yaml",
    "worker-only": "ci/worker-only-values.yaml",
    "ha": "ci/ha-values.yaml",
    "chart-secret": "ci/chart-secret-values.yaml",
}
HEADER = (
    "# Rendered from deploy/helm/somaagent with its default values by scripts/render_k8s.py\n"
    "# (make k8s): do not edit; change the chart and render again.\n"
)


def values_of(variant: str) -> dict[str, Any]:
    path = VARIANTS[variant]
    if path is None:
        return {}
    loaded: dict[str, Any] = yaml.safe_load((CHART / path).read_text())
    return loaded


def render(variant: str = "default") -> dict[str, str]:
    """Template file name -> rendered text, for the templates that render anything."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered: dict[str, str] = chart.render(
            values_of(variant), name=RELEASE, namespace=NAMESPACE
        )
    files = {}
    for template, text in sorted(rendered.items()):
        name = Path(template).name
        if name.endswith(".yaml") and text.strip():
            files[name] = HEADER + text.strip() + "\n"
    return files


def manifests(variant: str = "default") -> list[dict[str, Any]]:
    """Every Kubernetes object of one variant's render."""
    return [
        doc
        for text in render(variant).values()
        for doc in yaml.safe_load_all(text)
        if doc is not None
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    fresh = render()
    current = {p.name: p.read_text() for p in OUT.glob("*.yaml")} if OUT.is_dir() else {}
    if args.check:
        stale = sorted(n for n in fresh.keys() | current.keys() if fresh.get(n) != current.get(n))
        if stale:
            print(f"deploy/k8s/ is stale ({', '.join(stale)}): run `make k8s`", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(exist_ok=True)
    for name in current.keys() - fresh.keys():
        (OUT / name).unlink()
    for name, text in fresh.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(fresh)} files to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
