"""OpenTelemetry: tracer provider setup (entry points only) and Kafka trace propagation."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, MutableSequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from shared.contracts.codec import TRACEPARENT_HEADER
from shared.contracts.envelope import Envelope

_tracer = trace.get_tracer("itsm.bus")
_HEADER = TRACEPARENT_HEADER


def setup_tracing(service_name: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install a tracer provider (see `tracer_provider`) and the instrumentation packages. Call
    only from an entry point (app lifespan / worker main); a second call in the same process
    keeps the first provider (OpenTelemetry allows one), e.g. several services embedded."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = tracer_provider(service_name, exporter)
    trace.set_tracer_provider(provider)
    instrument_libraries()
    return provider


def instrument_libraries() -> None:
    """aiokafka (a send span per record, its context injected into the record headers, receive
    spans), PyMongo (a span per command; its listener covers the async client too) and httpx
    (notify's webhook, Slack and Teams posts carry `traceparent` to the receiver). Must run
    before the clients are created; a second call changes nothing."""
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    for instrumentor, options in (
        (AIOKafkaInstrumentor(), {"async_produce_hook": keep_one_traceparent}),
        (PymongoInstrumentor(), {}),
        (HTTPXClientInstrumentor(), {}),
    ):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(**options)


def untraced_sends(internal: Callable[[str], bool]) -> None:
    """Records sent to the topics `internal` names skip the aiokafka instrumentation: no send
    span and no `traceparent` header. For a table's changelog: its records are state, not
    events, and a span per write was noise in every trace (and a tenth of the SLA worker's CPU).
    Call after `setup_tracing`; a second call changes nothing."""
    import aiokafka
    from wrapt import wrap_function_wrapper

    current = aiokafka.AIOKafkaProducer.__dict__["send"]
    if getattr(current, "_self_untraced", False) or not hasattr(current, "__wrapped__"):
        return  # already done, or nothing instruments the sends

    def send(wrapped: Any, instance: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        topic = args[0] if args else kwargs.get("topic")
        if isinstance(topic, str) and internal(topic):
            return wrapped.__wrapped__(*args, **kwargs)  # the uninstrumented send
        return wrapped(*args, **kwargs)

    wrap_function_wrapper(aiokafka.AIOKafkaProducer, "send", send)
    aiokafka.AIOKafkaProducer.__dict__["send"]._self_untraced = True


async def keep_one_traceparent(span: Any, args: Any, kwargs: dict[str, Any]) -> None:
    """The aiokafka instrumentation appends its send span's `traceparent` to headers that the
    CloudEvents codec already gave one (the event's trace context). Exactly one goes on the
    wire: the send span's when it continues the event's trace (it is the more precise parent),
    else the event's (e.g. an SLA breach sent from a wake-up tick belongs to its incident's
    trace, not to the tick's)."""
    headers = kwargs.get("headers")
    if not isinstance(headers, MutableSequence):
        return
    values = [value for key, value in headers if key == _HEADER]
    if len(values) < 2:
        return
    event, injected = values[0], values[-1]
    keep = injected if _trace_id(injected) == _trace_id(event) else event
    headers[:] = [(key, value) for key, value in headers if key != _HEADER]
    headers.append((_HEADER, keep))


def _trace_id(traceparent: bytes | str | None) -> str:
    text = traceparent.decode() if isinstance(traceparent, bytes) else traceparent or ""
    parts = text.split("-")
    return parts[1] if len(parts) == 4 else ""


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


def trace_reference() -> str:
    """The current span as a compact reference (`<trace id>-<span id>`, hex) to store with an
    aggregate whose later, timer-driven work belongs to the same trace (an SLA breach, a later
    escalation step); empty when the span is not sampled (nothing would be recorded)."""
    context = trace.get_current_span().get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return ""
    return f"{context.trace_id:032x}-{context.span_id:016x}"


def context_of(reference: str | None) -> Context:
    """The stored reference as a parent context (an empty one if there is none)."""
    try:
        trace_id, span_id = (int(part, 16) for part in (reference or "").split("-"))
    except ValueError:
        return Context()
    parent = trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent), Context())
