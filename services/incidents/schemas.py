"""HTTP input and output models. Inputs forbid unknown fields, so nothing outside them (status,
requester, sequence, SLA fields) can be mass-assigned."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from services.incidents.domain import Incident
from shared.contracts.incidents import PendingReason, Priority, Status, TicketType, Tier
from shared.http.fields import refuse_null, without_default

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2_000)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IncidentCreate(Input):
    title: Name
    description: str = Field("", max_length=20_000)
    impact: int = Field(3, ge=1, le=3, description="1 = extensive/widespread .. 3 = minor")
    urgency: int = Field(3, ge=1, le=3, description="1 = critical .. 3 = low")
    ticket_type: TicketType = "incident"
    category: Name | None = None
    subcategory: Name | None = None
    service: Name | None = None
    configuration_item: Name | None = None
    requester: Name | None = Field(
        None, description="Record on behalf of this user (staff and service callers only)"
    )


class IncidentUpdate(Input):
    """Left out: unchanged. Title and description cannot be null; the others null clears."""

    title: Name | SkipJsonSchema[None] = Field(None, json_schema_extra=without_default)
    description: str | SkipJsonSchema[None] = Field(
        None, max_length=20_000, json_schema_extra=without_default
    )
    category: Name | None = None
    subcategory: Name | None = None
    service: Name | None = None
    configuration_item: Name | None = None

    _not_null = field_validator("title", "description", mode="before")(refuse_null)


class Reclassification(Input):
    impact: int = Field(ge=1, le=3)
    urgency: int = Field(ge=1, le=3)
    reason: Reason


class Assignment(Input):
    group: Name
    assignee: Name | None = None
    reason: Reason | None = None


class FunctionalEscalation(Input):
    to_group: Name
    reason: Reason


class ManagerEscalation(Input):
    manager: Name | None = Field(None, description="Defaults to the assignment group's manager")
    reason: Reason


class Hold(Input):
    reason: PendingReason
    note: Reason | None = None


class Message(Input):
    body: Text


class WatchersChange(Input):
    add: list[Name] = Field(default_factory=list, max_length=50)
    remove: list[Name] = Field(default_factory=list, max_length=50)


class Justification(Input):
    reason: Reason


class ParentLink(Input):
    parent_id: Name


class Resolution(Input):
    code: Name = Field(description="Resolution code, e.g. fixed, workaround, duplicate")
    notes: Text


class Rating(Input):
    score: int = Field(ge=1, le=5)
    comment: str = Field("", max_length=2_000)


class AlertRead(BaseModel):
    fingerprint: str
    occurrences: int
    last_seen: datetime


class IncidentRead(BaseModel):
    id: str
    number: str
    title: str
    description: str
    requester: str
    impact: int
    urgency: int
    priority: Priority
    ticket_type: TicketType
    category: str | None
    subcategory: str | None
    service: str | None
    configuration_item: str | None
    status: Status
    pending_reason: PendingReason | None
    assignment_group: str | None
    tier: Tier | None
    assignee: str | None
    reassignment_count: int
    escalation_count: int
    escalated_to_manager: str | None
    watchers: list[str]
    first_response_at: datetime | None
    major: bool
    parent_id: str | None
    resolution_code: str | None
    resolution_notes: str | None
    resolved_at: datetime | None
    first_contact_resolution: bool | None
    closed_at: datetime | None
    closure: str | None
    reopen_count: int
    csat_score: int | None
    csat_comment: str | None
    alert: AlertRead | None
    opened_at: datetime
    created_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def of(cls, incident: Incident) -> IncidentRead:
        return cls.model_validate(incident, from_attributes=True)


class TimelineEntry(BaseModel):
    at: datetime
    actor: str
    events: list[str]
    sequences: list[int]
    status: Status
    changes: dict[str, dict[str, Any]]
    body: str | None
    reason: str | None
    visibility: Literal["public", "internal"]


class GroupCreate(Input):
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w .-]*$")]
    tier: Tier
    members: list[Name] = Field(default_factory=list, max_length=500)
    manager: Name | None = None


class GroupMembers(Input):
    members: list[Name] = Field(max_length=500)
    manager: Name | None = None


class GroupRead(BaseModel):
    name: str
    tier: Tier
    members: list[str]
    manager: str | None
    version: int


class AlertmanagerAlert(BaseModel):
    """One alert of Alertmanager's webhook payload (version 4)."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(max_length=100)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=100)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str | None = Field(None, max_length=2_000)
    fingerprint: str | None = Field(None, max_length=200)


class AlertmanagerWebhook(BaseModel):
    """Prometheus Alertmanager's webhook payload (extra fields are ignored)."""

    version: str = "4"
    status: Literal["firing", "resolved"]
    receiver: str = Field("alertmanager", max_length=200)
    alerts: list[AlertmanagerAlert] = Field(min_length=1, max_length=1_000)
    externalURL: str | None = Field(None, max_length=2_000)
