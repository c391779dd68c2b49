"""Trace context across Kafka and across time: one `traceparent` header per record, the nesting
of a consumer's handling under Faust's span, and the stored references that let timer-driven
work (an SLA breach, a later escalation step) join the trace that started it."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.sla.domain import new_state
from services.sla.processor.codec import from_table_value, stored_trace, to_table_value
from shared.bus.processing import RecordProcessor, SourcePosition
from shared.contracts.codec import KafkaRecord
from shared.telemetry import (
    context_of,
    current_traceparent,
    keep_one_traceparent,
    trace_reference,
    tracer_provider,
)

EVENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SAME_TRACE = b"00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
OTHER_TRACE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
POSITION = SourcePosition("itsm.incidents.events.v1", 0, 7)


def recording_tracer() -> trace.Tracer:
    return tracer_provider("t", InMemorySpanExporter()).get_tracer("t")


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        # the send span continues the event's trace: it is the more precise parent
        ([("ce_id", b"1"), ("traceparent", EVENT), ("traceparent", SAME_TRACE)], SAME_TRACE),
        # the send happened outside the event's trace (a wake-up tick): the event's wins
        ([("ce_id", b"1"), ("traceparent", EVENT), ("traceparent", OTHER_TRACE)], EVENT),
        # only one: nothing to choose
        ([("ce_id", b"1"), ("traceparent", EVENT)], EVENT),
        ([("traceparent", OTHER_TRACE)], OTHER_TRACE),
    ],
)
async def test_exactly_one_traceparent_goes_on_the_wire(
    headers: list[tuple[str, bytes]], kept: bytes
) -> None:
    kwargs: dict[str, Any] = {"headers": list(headers)}
    await keep_one_traceparent(None, (), kwargs)
    values = [value for key, value in kwargs["headers"] if key == "traceparent"]
    assert values == [kept]
    assert [k for k, _ in kwargs["headers"] if k != "traceparent"] == [
        k for k, _ in headers if k != "traceparent"
    ]


async def test_immutable_or_missing_headers_are_left_alone() -> None:
    frozen = {"headers": ((b"traceparent", EVENT),)}
    await keep_one_traceparent(None, (), frozen)
    assert frozen == {"headers": ((b"traceparent", EVENT),)}
    await keep_one_traceparent(None, (), {})


def test_a_sampled_span_is_remembered_and_becomes_the_parent_later() -> None:
    tracer = recording_tracer()
    with tracer.start_as_current_span("opened") as opened:
        reference = trace_reference()
    with tracer.start_as_current_span("breach", context=context_of(reference)) as later:
        pass
    assert (
        reference
        == f"{opened.get_span_context().trace_id:032x}-{opened.get_span_context().span_id:016x}"
    )
    assert later.get_span_context().trace_id == opened.get_span_context().trace_id
    assert later.parent is not None and later.parent.span_id == opened.get_span_context().span_id


def test_nothing_is_remembered_outside_a_sampled_span() -> None:
    assert trace_reference() == ""
    unsampled = tracer_provider("t").get_tracer("t")  # no exporter: nothing is recorded
    with unsampled.start_as_current_span("opened"):
        assert trace_reference() == ""
    for reference in ("", "not-a-reference", None):
        assert not trace.get_current_span(context_of(reference)).get_span_context().is_valid


def test_the_ticket_trace_is_stored_beside_its_sla_state_and_optional() -> None:
    state = new_state("INC-1")
    reference = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"
    value = to_table_value(state, 2, kpi={"open": 1}, trace=reference)
    assert stored_trace(value) == reference
    assert from_table_value(value) == state
    untraced = to_table_value(state, 2, kpi={"open": 1})  # as stored before traces, too
    assert stored_trace(untraced) == ""
    assert from_table_value(untraced) == state
    assert stored_trace(None) == ""


def test_handling_nests_under_a_current_span_of_the_records_trace() -> None:
    tracer = recording_tracer()
    with tracer.start_as_current_span("producer"):
        header = current_traceparent()
    assert header is not None
    record = KafkaRecord(b"k", b"{}", (("traceparent", header.encode()),))
    # Faust's sensor opened a span continuing the record's trace: the handling nests under it
    with tracer.start_as_current_span("faust process", context=context_of(_reference(header))):
        name, kind, _ = RecordProcessor._span_parent(record, POSITION)
    assert (name, kind) == (f"{POSITION.topic} handle", trace.SpanKind.INTERNAL)
    # a plain consumer: the record's context is the parent of a consumer span
    name, kind, parent = RecordProcessor._span_parent(record, POSITION)
    assert (name, kind) == (f"{POSITION.topic} process", trace.SpanKind.CONSUMER)
    remote = trace.get_current_span(parent).get_span_context()
    assert f"{remote.trace_id:032x}" == header.split("-")[1]


def _reference(traceparent: str) -> str:
    _, trace_id, span_id, _ = traceparent.split("-")
    return f"{trace_id}-{span_id}"
