"""Incident events as the incidents service publishes them (CloudEvents, binary mode)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.contracts.codec import KafkaRecord, encode
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import (
    IncidentAssigned,
    IncidentCreated,
    IncidentEvent,
    IncidentReplied,
    IncidentResolved,
    Priority,
)


def envelope(event: IncidentEvent, sequence: int, at: datetime) -> Envelope:
    return Envelope(
        type=event.event_type,
        source="/itsm/incidents",
        subject=event.incident_id,
        sequence=sequence,
        data=event.model_dump(mode="json"),
        time=at,
    )


def record(event: IncidentEvent, sequence: int, at: datetime) -> KafkaRecord:
    return encode(envelope(event, sequence, at))


def created(
    ticket_id: str, at: datetime, priority: Priority = "P1", **fields: Any
) -> IncidentCreated:
    return IncidentCreated(
        incident_id=ticket_id, actor="monitor", status="new", number="INC0000001",
        title="Mail is down", requester="rita", impact=1, urgency=1, priority=priority,
        opened_at=fields.pop("opened_at", at), **fields,
    )  # fmt: skip


def replied(ticket_id: str) -> IncidentReplied:
    return IncidentReplied(
        incident_id=ticket_id, actor="ann", status="in_progress", body="On it",
        by_staff=True, first_response=True,
    )  # fmt: skip


def assigned(ticket_id: str, group: str = "service-desk") -> IncidentAssigned:
    return IncidentAssigned(
        incident_id=ticket_id, actor="disp", status="assigned", group=group, tier="L1",
        assignee="ann", previous_group=None, previous_assignee=None, reassignment_count=0,
    )  # fmt: skip


def resolved(ticket_id: str, at: datetime) -> IncidentResolved:
    return IncidentResolved(
        incident_id=ticket_id, actor="ann", status="resolved", resolution_code="fixed",
        resolution_notes="Restarted the mail relay", resolved_at=at,
        first_contact_resolution=True, group="service-desk", tier="L1",
    )  # fmt: skip
