"""Incident event contracts (`itsm.incident.*`), published on the incident events topic.

Every event names the incident, the actor and the incident's status after the event, so a
consumer (the SLA engine, notify) can follow a ticket from its events alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.registry import EventData, event_type
from shared.contracts.topics import Topic

Priority = Literal["P1", "P2", "P3", "P4", "P5"]
Status = Literal["new", "assigned", "in_progress", "pending", "resolved", "closed", "cancelled"]
PendingReason = Literal["awaiting_requester", "awaiting_vendor", "awaiting_change"]
Tier = Literal["L1", "L2", "L3"]
TicketType = Literal["incident", "service_request"]
Closure = Literal["confirmed", "automatic", "manual"]


class FieldChange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    before: Any
    after: Any


class IncidentEvent(EventData):
    incident_id: str
    actor: str
    status: Status


def _incident(name: str):  # type: ignore[no-untyped-def]
    return event_type(f"itsm.incident.{name}.v1", topic=Topic.INCIDENTS, aggregate="incident")


@_incident("created")
class IncidentCreated(IncidentEvent):
    number: str = Field(description="Human-facing ticket number, e.g. INC0001042")
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    requester: str
    impact: int = Field(ge=1, le=3)
    urgency: int = Field(ge=1, le=3)
    priority: Priority
    ticket_type: TicketType = "incident"
    category: str | None = None
    subcategory: str | None = None
    service: str | None = None
    configuration_item: str | None = None
    opened_at: datetime = Field(description="When the disruption began (an alert's start time)")
    alert_fingerprint: str | None = None


@_incident("updated")
class IncidentUpdated(IncidentEvent):
    """Descriptive fields edited (title, description, category, service, CI)."""

    changes: dict[str, FieldChange]


@_incident("reprioritized")
class IncidentReprioritized(IncidentEvent):
    impact: int = Field(ge=1, le=3)
    urgency: int = Field(ge=1, le=3)
    priority: Priority
    previous_priority: Priority
    reason: str = Field(min_length=1)


@_incident("assigned")
class IncidentAssigned(IncidentEvent):
    group: str
    tier: Tier
    assignee: str | None
    previous_group: str | None
    previous_assignee: str | None
    reassignment_count: int = Field(ge=0)
    reason: str | None = None


@_incident("escalated")
class IncidentEscalated(IncidentEvent):
    """Functional: to a group of the next tier. Hierarchical: to a manager's attention."""

    kind: Literal["functional", "hierarchical"]
    reason: str = Field(min_length=1)
    from_group: str | None
    to_group: str | None = None
    to_tier: Tier | None = None
    manager: str | None = None


@_incident("status_changed")
class IncidentStatusChanged(IncidentEvent):
    """Work started, put on hold (pending: the SLA pauses) or resumed."""

    previous_status: Status
    pending_reason: PendingReason | None = None
    reason: str | None = None


@_incident("replied")
class IncidentReplied(IncidentEvent):
    """A public reply, visible to the requester. The first by staff is the first response."""

    body: str
    by_staff: bool
    first_response: bool


@_incident("work_note_added")
class IncidentWorkNoteAdded(IncidentEvent):
    """An internal note, visible to staff only."""

    body: str


@_incident("watchers_changed")
class IncidentWatchersChanged(IncidentEvent):
    added: list[str]
    removed: list[str]
    watchers: list[str]


@_incident("major_declared")
class IncidentMajorDeclared(IncidentEvent):
    reason: str = Field(min_length=1)
    priority: Priority


@_incident("linked")
class IncidentLinked(IncidentEvent):
    """Made a child of a parent incident; it is resolved when its parent is."""

    parent_id: str


@_incident("resolved")
class IncidentResolved(IncidentEvent):
    resolution_code: str
    resolution_notes: str
    resolved_at: datetime
    first_contact_resolution: bool
    group: str | None
    tier: Tier | None
    cascaded_from: str | None = None


@_incident("closed")
class IncidentClosed(IncidentEvent):
    closure: Closure


@_incident("reopened")
class IncidentReopened(IncidentEvent):
    reason: str = Field(min_length=1)
    reopen_count: int = Field(ge=1)


@_incident("cancelled")
class IncidentCancelled(IncidentEvent):
    reason: str = Field(min_length=1)


@_incident("rated")
class IncidentRated(IncidentEvent):
    """Customer satisfaction, given once by the requester after resolution."""

    score: int = Field(ge=1, le=5)
    comment: str = ""


@_incident("alert_occurred")
class IncidentAlertOccurred(IncidentEvent):
    """A monitoring alert fired again and was deduplicated onto this incident."""

    fingerprint: str
    occurrences: int = Field(ge=1)
    starts_at: datetime
    last_seen: datetime


@event_type("itsm.group.saved.v1", topic=Topic.INCIDENTS, aggregate="group")
class AssignmentGroupSaved(EventData):
    """An assignment group as it is now, after its creation or a change of members: who works
    the tickets assigned to it. Keyed by the group's name; its sequence is the group's version.
    Other services scope their ticket data by it (the SLA API)."""

    name: str = Field(min_length=1, max_length=100)
    tier: Tier
    members: list[str] = Field(max_length=500)
    manager: str | None = None
