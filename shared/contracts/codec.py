"""Envelope <-> Kafka record, through the `cloudevents` package.

Binary mode (`ce_*` headers, JSON body) is what the platform produces; structured mode
(`application/cloudevents+json`) is accepted from external producers and can be produced on
request. Decoding validates the payload of every registered event type; a record that fails
raises `UndecodableRecord` with a reason fit for the dead-letter header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import ValidationError

from shared.contracts.envelope import Envelope
from shared.contracts.registry import is_registered, validate_data

Mode = Literal["binary", "structured"]
_FORMAT = JSONFormat()
_CORE_ATTRS = {"id", "source", "type", "specversion", "time", "subject", "datacontenttype"}
TRACEPARENT_HEADER = "traceparent"


class UndecodableRecord(ValueError):
    """A record that is not a valid platform CloudEvent; `reason` goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class KafkaRecord:
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


def encode(envelope: Envelope, mode: Mode = "binary") -> KafkaRecord:
    attributes: dict[str, Any] = {
        "id": envelope.id,
        "source": envelope.source,
        "type": envelope.type,
        "subject": envelope.subject,
        "time": envelope.time,
        "datacontenttype": "application/json",
        "partitionkey": envelope.subject,
        "sequence": str(envelope.sequence),
        **envelope.extensions,
    }
    event = CloudEvent(attributes, envelope.data)
    message = (
        ce_kafka.to_binary(event, _FORMAT)
        if mode == "binary"
        else ce_kafka.to_structured(event, _FORMAT)
    )
    headers = list(message.headers.items())
    if mode == "binary":
        # partitionkey travels as the record key; a ce_ header would only duplicate it.
        headers = [(k, v) for k, v in headers if k != "ce_partitionkey"]
    if envelope.traceparent:
        # W3C trace context as its own header, as OpenTelemetry propagators read it.
        headers.append((TRACEPARENT_HEADER, envelope.traceparent.encode()))
    key = message.key.encode() if isinstance(message.key, str) else message.key
    return KafkaRecord(key=key, value=message.value, headers=tuple(headers))


def decode(record: KafkaRecord) -> Envelope:
    """Parse a record in either mode and validate it; raises UndecodableRecord."""
    headers: dict[str, bytes] = {}
    for k, v in record.headers:
        headers[k] = v
    try:
        event = ce_kafka.from_kafka(
            ce_kafka.KafkaMessage(headers=headers, key=record.key, value=record.value),
            _FORMAT,
        )
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as exc:
        raise UndecodableRecord(f"not a CloudEvent: {_short(exc)}") from exc
    attrs = event.get_attributes()
    if attrs.get("specversion") != "1.0":
        raise UndecodableRecord(f"unsupported specversion {attrs.get('specversion')!r}")
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        raise UndecodableRecord("data must be a JSON object (datacontenttype application/json)")
    data = data if data is not None else {}
    subject = attrs.get("subject") or attrs.get("partitionkey")
    if not subject:
        raise UndecodableRecord("event has neither subject nor record key (aggregate id)")
    sequence = _sequence(attrs.get("sequence"))
    type_name = str(attrs["type"])
    if is_registered(type_name):
        try:
            validate_data(type_name, data)
        except ValidationError as exc:
            raise UndecodableRecord(f"invalid {type_name} data: {_short(exc)}") from exc
    time = attrs.get("time") or datetime.now(UTC)
    if time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    traceparent = headers.get(TRACEPARENT_HEADER)
    extensions = {
        k: str(v)
        for k, v in attrs.items()
        if k not in _CORE_ATTRS and k not in {"sequence", "partitionkey", TRACEPARENT_HEADER}
    }
    return Envelope(
        id=str(attrs["id"]),
        type=type_name,
        source=str(attrs["source"]),
        subject=str(subject),
        sequence=sequence,
        time=time,
        data=data,
        traceparent=traceparent.decode() if traceparent else attrs.get(TRACEPARENT_HEADER),
        extensions=extensions,
    )


def _sequence(raw: Any) -> int:
    """External producers may omit `sequence` (ingest topic); 0 means 'not sequenced'."""
    if raw is None:
        return 0
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise UndecodableRecord(f"sequence must be an integer, got {raw!r}") from None
    if value < 0:
        raise UndecodableRecord("sequence must not be negative")
    return value


def _short(exc: Exception, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def structured_json(envelope: Envelope) -> dict[str, Any]:
    """The structured-mode JSON object, e.g. for docs and HTTP ingestion tests."""
    parsed: dict[str, Any] = json.loads(encode(envelope, "structured").value)
    return parsed
