"""The Grafana dashboard and the Prometheus alert rules name only metrics that a running
platform exposes at /metrics (checked with a real PromQL parser, not a pattern)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.platform import Platform, launch
from tests.support.deploy_tools import DEPLOY

pytestmark = pytest.mark.e2e

DASHBOARD = DEPLOY / "observability/grafana/dashboards/somaagent01.json"
ALERTS = DEPLOY / "observability/prometheus/alerts.yaml"
_GRAFANA = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*", "${job}": ".*"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def dashboard_queries() -> Iterator[str]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            query = target["expr"]
            for variable, value in _GRAFANA.items():
                query = query.replace(variable, value)
            yield query


def alert_queries() -> Iterator[str]:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def metric_names(query: str) -> set[str]:
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(query), visit)
    return names


def exposed(text: str) -> set[str]:
    """Every series name /metrics can show, samples or not yet (a family is declared)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def test_assets_parse_and_name_soma_metrics_only() -> None:
    queries = [*dashboard_queries(), *alert_queries()]
    assert len(queries) > 20
    for query in queries:
        names = metric_names(query)
        assert names, query
        assert all(name.startswith("soma_") for name in names), query


def test_every_metric_of_the_dashboard_and_alerts_is_exposed(
    tmp_path: Path, platform_factory: list[Platform]
) -> None:
    platform = launch(tmp_path)
    platform_factory.append(platform)
    platform.wait_healthy()
    text = httpx.get(f"{platform.base_url}/metrics", timeout=10).text
    available = exposed(text)
    wanted = {
        name: source
        for source, queries in (("dashboard", dashboard_queries()), ("alerts", alert_queries()))
        for query in queries
        for name in metric_names(query)
    }
    assert len(wanted) >= 15
    missing = sorted(f"{name} ({where})" for name, where in wanted.items() if name not in available)
    assert missing == []
    assert platform.terminate() == 0
