"""Request ids, spans and JSON log lines line up for one HTTP request."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.app import create_app
from soma.observability.logging import configure_logging
from soma.observability.metrics import Metrics
from soma.observability.tracing import create_tracer_provider


class _Health:
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return True

    async def report(self, credentials: str | None = None, client: str = "") -> dict[str, Any]:
        return {"status": "healthy", "services": {}}


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("json", "INFO", stream)
    yield stream
    logging.getLogger().handlers.clear()


def setup() -> tuple[httpx.AsyncClient, InMemorySpanExporter, Metrics]:
    exporter = InMemorySpanExporter()
    provider = create_tracer_provider(None, (SimpleSpanProcessor(exporter),))
    metrics = Metrics()
    app = create_app(_Health(), metrics, provider.get_tracer("test"))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return client, exporter, metrics


async def test_request_span_trace_id_appears_in_its_log_line(log_stream: io.StringIO) -> None:
    client, exporter, _ = setup()
    async with client:
        response = await client.get("/v1/health", headers={"X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /v1/health"
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 200
    trace_id = format(span.context.trace_id, "032x")
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "soma.http"]
    assert len(access) == 1
    line = access[0]
    assert line["trace_id"] == trace_id
    assert line["span_id"] == format(span.context.span_id, "016x")
    assert line["request_id"] == "req-42"
    assert {"ts", "level", "logger", "msg", "service"} <= line.keys()
    assert line["service"] == "http"


async def test_request_id_is_generated_when_missing_or_invalid(log_stream: io.StringIO) -> None:
    client, _, _ = setup()
    async with client:
        generated = await client.get("/v1/health/live")
        rejected = await client.get("/v1/health/live", headers={"X-Request-ID": "bad id\t!"})
    assert len(generated.headers["x-request-id"]) == 32
    assert rejected.headers["x-request-id"] != "bad id\t!"


async def test_metrics_label_by_route_template_not_raw_path() -> None:
    client, _, _ = setup()
    async with client:
        await client.get("/v1/health")
        await client.get("/no/such/path/123")
        exposition = (await client.get("/metrics")).text
    assert (
        'soma_http_requests_total{method="GET",route="/v1/health",status="200"} 1.0' in exposition
    )
    assert 'route="unmatched",status="404"' in exposition
    assert "/no/such/path/123" not in exposition
    assert "process_cpu_seconds_total" in exposition
    assert "soma_http_request_duration_seconds_bucket" in exposition


async def test_errors_are_problem_json() -> None:
    client, _, _ = setup()
    async with client:
        response = await client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404 and body["title"] == "Not Found"
