"""The incident aggregate and the rules that configure it (pure: no I/O, time is a parameter)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from services.incidents.domain.lifecycle import Action, next_status
from shared.contracts.incidents import (
    Closure,
    IncidentEvent,
    PendingReason,
    Priority,
    Status,
    TicketType,
    Tier,
)
from shared.errors import Conflict

OPEN_STATUSES: frozenset[Status] = frozenset({"new", "assigned", "in_progress", "pending"})
TERMINAL_STATUSES: frozenset[Status] = frozenset({"closed", "cancelled"})

# ITIL default: impact (1 = extensive .. 3 = minor) x urgency (1 = critical .. 3 = low).
ITIL_MATRIX = "P1 P2 P3 / P2 P3 P4 / P3 P4 P5"


def parse_priority_matrix(text: str) -> dict[tuple[int, int], Priority]:
    """'P1 P2 P3 / P2 P3 P4 / P3 P4 P5': one row per impact, one column per urgency."""
    rows = [row.split() for row in text.split("/")]
    valid = {"P1", "P2", "P3", "P4", "P5"}
    if len(rows) != 3 or any(len(r) != 3 or not set(r) <= valid for r in rows):
        raise ValueError(f"priority matrix needs 3 rows of 3 of P1..P5, got {text!r}")
    return {
        (impact, urgency): rows[impact - 1][urgency - 1]  # type: ignore[misc]
        for impact in (1, 2, 3)
        for urgency in (1, 2, 3)
    }


@dataclass(frozen=True)
class Policy:
    """Per-deployment rules (from settings)."""

    priority_matrix: dict[tuple[int, int], Priority] = field(
        default_factory=lambda: parse_priority_matrix(ITIL_MATRIX)
    )
    reopen_window: timedelta = timedelta(days=7)
    auto_close_after: timedelta = timedelta(days=3)
    alert_auto_resolve: bool = True

    def priority(self, impact: int, urgency: int) -> Priority:
        return self.priority_matrix[(impact, urgency)]


@dataclass(frozen=True)
class AlertLink:
    """The monitoring alert an incident was opened from, and its later firings."""

    fingerprint: str
    occurrences: int
    last_seen: datetime
    recent_starts: tuple[str, ...]  # starts_at of recent firings: a re-sent firing counts once


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
    status: Status
    opened_at: datetime
    created_at: datetime
    updated_at: datetime
    version: int
    category: str | None = None
    subcategory: str | None = None
    service: str | None = None
    configuration_item: str | None = None
    pending_reason: PendingReason | None = None
    assignment_group: str | None = None
    tier: Tier | None = None
    assignee: str | None = None
    reassignment_count: int = 0
    escalation_count: int = 0
    escalated_to_manager: str | None = None
    watchers: tuple[str, ...] = ()
    first_response_at: datetime | None = None
    major: bool = False
    parent_id: str | None = None
    resolution_code: str | None = None
    resolution_notes: str | None = None
    resolved_at: datetime | None = None
    first_contact_resolution: bool | None = None
    closed_at: datetime | None = None
    closure: Closure | None = None
    reopen_count: int = 0
    csat_score: int | None = None
    csat_comment: str | None = None
    alert: AlertLink | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


Outcome = tuple[Incident, list[IncidentEvent]]


def evolve(
    incident: Incident, events: list[IncidentEvent], now: datetime, **changes: Any
) -> Outcome:
    """The incident after `events`: its version advances by one per event (each event's
    sequence); no events, no change."""
    if not events:
        return incident, []
    updated = replace(incident, **changes, updated_at=now, version=incident.version + len(events))
    return updated, events


def ensure_not_terminal(incident: Incident, doing: str) -> None:
    if incident.status in TERMINAL_STATUSES:
        raise Conflict(f"cannot {doing}: the incident is {incident.status}")


def step(incident: Incident, action: Action) -> Status:
    return next_status(incident.status, action)
