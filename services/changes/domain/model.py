"""The change request aggregate (pure: no I/O; time is a parameter)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from services.changes.domain.lifecycle import ChangeAction, next_status
from shared.contracts.changes import (
    ChangeEvent,
    ChangeStatus,
    ChangeType,
    ImplementationOutcome,
    RiskLevel,
)
from shared.errors import Invalid

Level = Literal["low", "medium", "high"]


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval [start, end)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise Invalid("window times must be timezone-aware")
        if self.end <= self.start:
            raise Invalid("a change window must end after it starts")

    def overlaps(self, other: Window) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class Plan:
    implementation: str = ""
    backout: str = ""
    test: str = ""
    backout_tested: bool = False

    def missing(self) -> list[str]:
        return [
            name
            for name, text in (
                ("implementation plan", self.implementation),
                ("backout plan", self.backout),
                ("test plan", self.test),
            )
            if not text.strip()
        ]


@dataclass(frozen=True)
class RiskAnswers:
    """The risk questionnaire."""

    user_impact: Level = "low"
    complexity: Level = "low"
    tested_in_staging: bool = True
    similar_change_failed_before: bool = False


@dataclass(frozen=True)
class Risk:
    level: RiskLevel
    score: int
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Requirement:
    """`quorum` approvals from `group`; `members` is the group as it was at assessment (empty
    for the change-manager role, which anyone holding it satisfies)."""

    group: str
    quorum: int
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Approval:
    approver: str
    group: str
    decision: Literal["approve", "reject"]
    comment: str
    at: datetime
    on_behalf_of: str | None = None


@dataclass(frozen=True)
class Review:
    summary: str
    lessons: str
    by: str
    at: datetime


@dataclass(frozen=True)
class Change:
    id: str
    number: str
    title: str
    description: str
    change_type: ChangeType
    status: ChangeStatus
    requester: str
    created_at: datetime
    updated_at: datetime
    version: int
    implementer: str | None = None
    template: str | None = None
    services: tuple[str, ...] = ()
    configuration_items: tuple[str, ...] = ()
    plan: Plan = field(default_factory=Plan)
    window: Window | None = None
    answers: RiskAnswers = field(default_factory=RiskAnswers)
    risk: Risk | None = None
    requirements: tuple[Requirement, ...] = ()
    approvals: tuple[Approval, ...] = ()
    delegations: tuple[tuple[str, str], ...] = ()  # (approver, delegate)
    outcome: ImplementationOutcome | None = None
    actual_start: datetime | None = None
    actual_end: datetime | None = None
    review: Review | None = None
    caused_incidents: tuple[str, ...] = ()
    suggested_incidents: tuple[str, ...] = ()
    origin: str | None = None  # the external event (e.g. a CDEvent id) that recorded it

    @property
    def review_required(self) -> bool:
        """A post-implementation review is required for failed and emergency changes."""
        return self.change_type == "emergency" or self.outcome in ("failed", "rolled_back")


Outcome = tuple[Change, list[ChangeEvent]]


def evolve(change: Change, events: list[ChangeEvent], now: datetime, **fields: Any) -> Outcome:
    """The change after `events`: its version advances by one per event."""
    if not events:
        return change, []
    return replace(change, **fields, updated_at=now, version=change.version + len(events)), events


def step(change: Change, action: ChangeAction) -> ChangeStatus:
    return next_status(change.change_type, change.status, action)
