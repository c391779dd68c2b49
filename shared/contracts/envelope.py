"""The platform's view of a CloudEvents 1.0 event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.contracts.registry import EventData
from shared.ids import uuid7


@dataclass(frozen=True)
class Envelope:
    """A CloudEvent plus the platform's extension attributes.

    `subject` is the aggregate id and also the Kafka record key (CloudEvents `partitionkey`), so
    one aggregate's events stay ordered in one partition. `sequence` is the aggregate version the
    event produced; consumers skip anything at or below the last sequence they applied.
    """

    type: str
    source: str
    subject: str
    sequence: int
    data: dict[str, Any]
    id: str = field(default_factory=uuid7)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    traceparent: str | None = None
    extensions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.time.tzinfo is None:
            raise ValueError("Envelope.time must be timezone-aware")

    @property
    def key(self) -> str:
        return self.subject

    def with_traceparent(self, traceparent: str | None) -> Envelope:
        return replace(self, traceparent=traceparent)

    def to_document(self) -> dict[str, Any]:
        """The form stored in an aggregate's outbox array (BSON-friendly)."""
        doc: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "sequence": self.sequence,
            "time": self.time,
            "data": self.data,
        }
        if self.traceparent:
            doc["traceparent"] = self.traceparent
        if self.extensions:
            doc["extensions"] = self.extensions
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Envelope:
        time = doc["time"]
        if time.tzinfo is None:  # BSON dates come back naive unless tz_aware is set
            time = time.replace(tzinfo=UTC)
        return cls(
            id=doc["id"],
            type=doc["type"],
            source=doc["source"],
            subject=doc["subject"],
            sequence=int(doc["sequence"]),
            time=time,
            data=doc["data"],
            traceparent=doc.get("traceparent"),
            extensions=dict(doc.get("extensions") or {}),
        )


def sequenced(
    subject: str,
    after_sequence: int,
    events: Sequence[EventData],
    *,
    source: str,
    time: datetime,
) -> list[Envelope]:
    """Envelopes for an aggregate's new events, numbered after its previous sequence."""
    return [
        Envelope(
            type=event.event_type,
            source=source,
            subject=subject,
            sequence=after_sequence + i,
            data=event.model_dump(mode="json"),
            time=time,
        )
        for i, event in enumerate(events, start=1)
    ]
