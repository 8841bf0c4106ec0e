"""OpenTelemetry tracing: one provider per process, OTLP export only when configured."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def create_tracer_provider(
    otlp_endpoint: str | None,
    extra_processors: tuple[SpanProcessor, ...] = (),
) -> TracerProvider:
    """A provider whose spans go to OTLP/HTTP when an endpoint is set, else only to `extra`."""
    provider = TracerProvider(resource=Resource.create({"service.name": "somaagent01"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    for processor in extra_processors:
        provider.add_span_processor(processor)
    return provider
