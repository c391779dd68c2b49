"""Incident event contracts (`itsm.incident.*`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.contracts.registry import EventData, event_type
from shared.contracts.topics import Topic

Priority = Literal["P1", "P2", "P3", "P4", "P5"]


@event_type("itsm.incident.created.v1", topic=Topic.INCIDENTS, aggregate="incident")
class IncidentCreated(EventData):
    incident_id: str
    number: str = Field(description="Human-facing ticket number, e.g. INC-01J…")
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    requester: str
    impact: int = Field(ge=1, le=3)
    urgency: int = Field(ge=1, le=3)
    priority: Priority
    ticket_type: Literal["incident", "service_request"] = "incident"
    service: str | None = None
    opened_at: datetime


@event_type("itsm.incident.updated.v1", topic=Topic.INCIDENTS, aggregate="incident")
class IncidentUpdated(EventData):
    """Descriptive fields edited; `changes` maps each edited field to its new value."""

    incident_id: str
    changes: dict[str, str | int | None]
    priority: Priority
    updated_by: str
