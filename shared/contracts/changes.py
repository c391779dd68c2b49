"""Change request event contracts (`itsm.change.*`), published on the change events topic."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.contracts.incidents import FieldChange
from shared.contracts.registry import EventData, event_type
from shared.contracts.topics import Topic

ChangeType = Literal["standard", "normal", "emergency"]
ChangeStatus = Literal[
    "draft", "assessment", "awaiting_approval", "scheduled", "implementing", "completed",
    "review", "closed", "rejected", "cancelled",
]  # fmt: skip
RiskLevel = Literal["low", "medium", "high"]
ImplementationOutcome = Literal["successful", "successful_with_issues", "failed", "rolled_back"]


class ChangeEvent(EventData):
    change_id: str
    actor: str
    status: ChangeStatus


def _change(name: str):  # type: ignore[no-untyped-def]
    return event_type(f"itsm.change.{name}.v1", topic=Topic.CHANGES, aggregate="change")


@_change("created")
class ChangeCreated(ChangeEvent):
    number: str
    title: str
    change_type: ChangeType
    requester: str
    implementer: str | None
    template: str | None
    services: list[str]
    configuration_items: list[str]
    planned_start: datetime | None
    planned_end: datetime | None


@_change("updated")
class ChangeUpdated(ChangeEvent):
    changes: dict[str, FieldChange]


@_change("submitted")
class ChangeSubmitted(ChangeEvent):
    pass


@_change("assessed")
class ChangeAssessed(ChangeEvent):
    risk_level: RiskLevel
    risk_score: int
    risk_reasons: list[str]
    required_approvals: list[dict[str, str | int]]


@_change("approval_recorded")
class ChangeApprovalRecorded(ChangeEvent):
    approver: str
    group: str
    decision: Literal["approve", "reject"]
    comment: str
    on_behalf_of: str | None = None


@_change("approval_delegated")
class ChangeApprovalDelegated(ChangeEvent):
    delegate: str


@_change("approved")
class ChangeApproved(ChangeEvent):
    """Every required approval is in (or the change is standard): it is scheduled."""

    planned_start: datetime
    planned_end: datetime
    configuration_items: list[str]


@_change("rejected")
class ChangeRejected(ChangeEvent):
    """An approver rejected it: back to draft for rework."""

    comment: str


@_change("started")
class ChangeStarted(ChangeEvent):
    actual_start: datetime


@_change("completed")
class ChangeCompleted(ChangeEvent):
    outcome: ImplementationOutcome
    actual_start: datetime
    actual_end: datetime
    review_required: bool
    configuration_items: list[str]
    services: list[str]


@_change("reviewed")
class ChangeReviewed(ChangeEvent):
    summary: str
    lessons: str = ""


@_change("closed")
class ChangeClosed(ChangeEvent):
    outcome: ImplementationOutcome | None


@_change("cancelled")
class ChangeCancelled(ChangeEvent):
    reason: str = Field(min_length=1)


@_change("declined")
class ChangeDeclined(ChangeEvent):
    """Rejected for good by a change manager."""

    reason: str = Field(min_length=1)


@_change("incident_linked")
class ChangeIncidentLinked(ChangeEvent):
    """`named`: the incident names this change. `suggested`: the incident hit an item of this
    change within the correlation window after it completed."""

    incident_id: str
    incident_number: str
    kind: Literal["named", "suggested"]
