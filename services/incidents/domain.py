"""Incident aggregate: pure state and rules (no I/O; time is a parameter)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from shared.contracts.incidents import IncidentCreated, IncidentUpdated, Priority
from shared.contracts.registry import EventData

TicketType = Literal["incident", "service_request"]
Status = Literal["new"]

# ITIL default: impact (1 = extensive .. 3 = minor) x urgency (1 = critical .. 3 = low).
DEFAULT_PRIORITY_MATRIX: dict[tuple[int, int], Priority] = {
    (1, 1): "P1", (1, 2): "P2", (1, 3): "P3",
    (2, 1): "P2", (2, 2): "P3", (2, 3): "P4",
    (3, 1): "P3", (3, 2): "P4", (3, 3): "P5",
}  # fmt: skip


def priority_of(
    impact: int, urgency: int, matrix: dict[tuple[int, int], Priority] = DEFAULT_PRIORITY_MATRIX
) -> Priority:
    return matrix[(impact, urgency)]


@dataclass(frozen=True)
class OpenIncident:
    title: str
    requester: str
    impact: int
    urgency: int
    description: str = ""
    ticket_type: TicketType = "incident"
    service: str | None = None


@dataclass(frozen=True)
class EditIncident:
    """Fields left as None are unchanged."""

    title: str | None = None
    description: str | None = None
    impact: int | None = None
    urgency: int | None = None


@dataclass(frozen=True)
class Incident:
    id: str
    number: str
    title: str
    description: str
    requester: str
    impact: int
    urgency: int
    priority: Priority
    ticket_type: TicketType
    service: str | None
    status: Status
    opened_at: datetime
    updated_at: datetime
    version: int


def open_incident(
    command: OpenIncident, *, incident_id: str, number: str, now: datetime
) -> tuple[Incident, list[EventData]]:
    incident = Incident(
        id=incident_id,
        number=number,
        title=command.title,
        description=command.description,
        requester=command.requester,
        impact=command.impact,
        urgency=command.urgency,
        priority=priority_of(command.impact, command.urgency),
        ticket_type=command.ticket_type,
        service=command.service,
        status="new",
        opened_at=now,
        updated_at=now,
        version=1,
    )
    event = IncidentCreated(
        incident_id=incident.id,
        number=incident.number,
        title=incident.title,
        description=incident.description,
        requester=incident.requester,
        impact=incident.impact,
        urgency=incident.urgency,
        priority=incident.priority,
        ticket_type=incident.ticket_type,
        service=incident.service,
        opened_at=now,
    )
    return incident, [event]


def edit_incident(
    incident: Incident, command: EditIncident, *, by: str, now: datetime
) -> tuple[Incident, list[EventData]]:
    changes = {
        name: value
        for name, value in vars(command).items()
        if value is not None and value != getattr(incident, name)
    }
    if not changes:
        return incident, []
    edited = replace(incident, **changes)
    edited = replace(
        edited,
        priority=priority_of(edited.impact, edited.urgency),
        updated_at=now,
        version=incident.version + 1,
    )
    event = IncidentUpdated(
        incident_id=incident.id, changes=changes, priority=edited.priority, updated_by=by
    )
    return edited, [event]
