"""CloudEvents contracts: round trips in both Kafka modes, schemas, validation errors."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import jsonschema
import pytest

from shared.contracts import Envelope, json_schemas, registered_types
from shared.contracts.codec import KafkaRecord, UndecodableRecord, decode, encode
from shared.contracts.incidents import IncidentCreated
from shared.ids import uuid7

OPENED = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


def created(**overrides: object) -> Envelope:
    data = IncidentCreated(
        incident_id="inc-1",
        actor="alice",
        status="new",
        number="INC0000001",
        title="Mail is down",
        requester="alice",
        impact=1,
        urgency=2,
        priority="P2",
        opened_at=OPENED,
    ).model_dump(mode="json")
    fields: dict = dict(
        type="itsm.incident.created.v1",
        source="/itsm/incidents",
        subject="inc-1",
        sequence=1,
        data=data,
        time=OPENED,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    fields.update(overrides)
    return Envelope(**fields)


def test_binary_mode_round_trip_uses_ce_headers_and_aggregate_key() -> None:
    envelope = created()
    record = encode(envelope, "binary")
    headers = dict(record.headers)
    assert record.key == b"inc-1"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"itsm.incident.created.v1"
    assert headers["ce_id"] == envelope.id.encode()
    assert headers["ce_sequence"] == b"1"
    assert headers["content-type"] == b"application/json"
    assert headers["traceparent"] == envelope.traceparent.encode()
    assert json.loads(record.value)["title"] == "Mail is down"
    assert decode(record) == envelope


def test_structured_mode_round_trip_carries_everything_in_the_body() -> None:
    envelope = created(sequence=7)
    record = encode(envelope, "structured")
    body = json.loads(record.value)
    assert dict(record.headers)["content-type"] == b"application/cloudevents+json"
    assert body["specversion"] == "1.0" and body["sequence"] == "7"
    assert body["data"]["incident_id"] == "inc-1"
    assert decode(record) == envelope


def test_external_structured_event_without_sequence_is_accepted_as_unsequenced() -> None:
    body = {
        "specversion": "1.0",
        "id": "alert-1",
        "source": "prometheus",
        "type": "io.prometheus.alert.firing",
        "subject": "fp-123",
        "data": {"labels": {"alertname": "HighLatency"}},
    }
    record = KafkaRecord(
        key=None,
        value=json.dumps(body).encode(),
        headers=(("content-type", b"application/cloudevents+json"),),
    )
    envelope = decode(record)
    assert envelope.sequence == 0 and envelope.subject == "fp-123"
    assert envelope.data == {"labels": {"alertname": "HighLatency"}}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (KafkaRecord(b"k", b"\xff\xfe not json", ()), "not a CloudEvent"),
        (
            KafkaRecord(b"k", b"{}", (("content-type", b"application/cloudevents+json"),)),
            "not a CloudEvent",
        ),
        (
            KafkaRecord(
                b"inc-1",
                b'{"incident_id": "inc-1"}',
                (
                    ("ce_specversion", b"1.0"),
                    ("ce_id", b"x"),
                    ("ce_source", b"/t"),
                    ("ce_type", b"itsm.incident.created.v1"),
                    ("content-type", b"application/json"),
                ),
            ),
            "invalid itsm.incident.created.v1 data",
        ),
        (
            KafkaRecord(
                b"inc-1",
                b"{}",
                (
                    ("ce_specversion", b"1.0"),
                    ("ce_id", b"x"),
                    ("ce_source", b"/t"),
                    ("ce_type", b"x.y"),
                    ("ce_sequence", b"first"),
                ),
            ),
            "sequence must be an integer",
        ),
    ],
    ids=["garbage", "empty-structured", "wrong-payload", "bad-sequence"],
)
def test_undecodable_records_raise_with_a_reason(record: KafkaRecord, reason: str) -> None:
    with pytest.raises(UndecodableRecord) as raised:
        decode(record)
    assert reason in raised.value.reason


def test_every_event_type_exports_a_json_schema_that_rejects_a_wrong_payload() -> None:
    schemas = json_schemas()
    assert set(schemas) == set(registered_types())
    schema = schemas["itsm.incident.created.v1"]
    jsonschema.Draft202012Validator.check_schema(schema)
    good = created().data
    jsonschema.validate(good, schema)
    for wrong in (
        {**good, "impact": 7},
        {**good, "priority": "urgent"},
        {k: v for k, v in good.items() if k != "title"},
        {**good, "surprise": True},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)


def test_event_type_names_are_versioned() -> None:
    for name in registered_types():
        parts = name.split(".")
        assert parts[0] == "itsm" and parts[-1].startswith("v") and parts[-1][1:].isdigit()


def test_uuid7_ids_are_version_7_and_time_ordered() -> None:
    ids = [uuid7() for _ in range(200)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert len(set(ids)) == len(ids)
    stamps = [uuid.UUID(i).int >> 80 for i in ids]
    assert stamps == sorted(stamps)
