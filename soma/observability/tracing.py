"""OpenTelemetry tracing: one provider per process, OTLP export only when configured."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased


def create_tracer_provider(
    otlp_endpoint: str | None,
    extra_processors: tuple[SpanProcessor, ...] = (),
) -> TracerProvider:
    """A provider whose spans go to OTLP/HTTP when an endpoint is set, else only to `extra`.

    With nowhere to send spans, none is recorded: spans still carry trace and span ids (for
    logs and the `traceparent` that crosses the bus) but cost next to nothing.
    """
    exporting = bool(otlp_endpoint or extra_processors)
    provider = TracerProvider(
        resource=Resource.create({"service.name": "somaagent01"}),
        sampler=ParentBased(ALWAYS_ON) if exporting else ALWAYS_OFF,
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    for processor in extra_processors:
        provider.add_span_processor(processor)
    return provider
