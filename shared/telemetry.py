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
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from shared.contracts.envelope import Envelope

_tracer = trace.get_tracer("itsm.outbox")


def setup_tracing(service_name: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install a tracer provider (see `tracer_provider`). Call only from an entry point (app
    factory / worker main)."""
    provider = tracer_provider(service_name, exporter)
    trace.set_tracer_provider(provider)
    return provider


def tracer_provider(service_name: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """The platform's tracer provider. The exporter is OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
    (or the traces-specific variable) is set; every other `OTEL_*` variable is read by the SDK
    itself. Without an exporter, spans are not recorded (a sampler that drops them all:
    recording costs per request, and nothing would read them) but still carry trace ids, so
    logs show `trace_id` and `traceparent` still propagates across Kafka (flagged not sampled).
    """
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    if exporter is None and (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    if exporter is None:
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    else:  # the sampler from OTEL_TRACES_SAMPLER, parent-based always-on by default
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(exporter))
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
