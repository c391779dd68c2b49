"""OpenTelemetry: tracer provider setup (entry points only) and Kafka trace propagation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from shared.contracts.envelope import Envelope

_tracer = trace.get_tracer("itsm.outbox")


def setup_tracing(service_name: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install a tracer provider. Call only from an entry point (app factory / worker main).

    The exporter is OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific variable) is
    set; every other `OTEL_*` variable is read by the SDK itself. Without an endpoint, spans are
    still created (trace ids in logs, propagation across Kafka) but not exported.
    """
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    if exporter is None and (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def producer_span(topic: str, envelope: Envelope) -> Iterator[str | None]:
    """A PRODUCER span for one event, child of the trace that wrote it; yields the traceparent
    to put on the Kafka record so the consumer's span continues the same trace."""
    parent = extract({"traceparent": envelope.traceparent} if envelope.traceparent else {})
    with _tracer.start_as_current_span(
        f"{topic} publish",
        context=parent,
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.message.id": envelope.id,
            "cloudevents.event_type": envelope.type,
            "cloudevents.event_subject": envelope.subject,
        },
    ):
        yield current_traceparent()
