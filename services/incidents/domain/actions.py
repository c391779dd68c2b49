"""Incident commands for recording, classifying, assigning, escalating and working an
incident: each takes the current incident and returns the new one plus the events it caused.
Pure: the actor and the time are parameters; access control is the handlers' job."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from services.incidents.domain.lifecycle import Action
from services.incidents.domain.model import (
    AlertLink,
    Incident,
    Outcome,
    Policy,
    ensure_not_terminal,
    evolve,
    step,
)
from shared.contracts.incidents import (
    FieldChange,
    IncidentAssigned,
    IncidentCreated,
    IncidentEscalated,
    IncidentReprioritized,
    IncidentStatusChanged,
    IncidentUpdated,
    PendingReason,
    TicketType,
    Tier,
)
from shared.errors import Conflict

TIERS: tuple[Tier, ...] = ("L1", "L2", "L3")


DESCRIPTIVE_FIELDS = ("title", "description", "category", "subcategory", "service")


@dataclass(frozen=True)
class OpenIncident:
    title: str
    requester: str
    impact: int = 3
    urgency: int = 3
    description: str = ""
    ticket_type: TicketType = "incident"
    category: str | None = None
    subcategory: str | None = None
    service: str | None = None
    configuration_item: str | None = None
    opened_at: datetime | None = None  # an alert's start time; defaults to now
    alert: AlertLink | None = None


@dataclass(frozen=True)
class GroupRef:
    name: str
    tier: Tier


def open_incident(
    command: OpenIncident, *, incident_id: str, number: str, now: datetime, policy: Policy
) -> Outcome:
    incident = Incident(
        id=incident_id,
        number=number,
        title=command.title,
        description=command.description,
        requester=command.requester,
        impact=command.impact,
        urgency=command.urgency,
        priority=policy.priority(command.impact, command.urgency),
        ticket_type=command.ticket_type,
        category=command.category,
        subcategory=command.subcategory,
        service=command.service,
        configuration_item=command.configuration_item,
        status="new",
        opened_at=command.opened_at or now,
        created_at=now,
        updated_at=now,
        version=1,
        alert=command.alert,
    )
    created = IncidentCreated(
        incident_id=incident.id,
        actor=command.requester,
        status="new",
        number=number,
        title=incident.title,
        description=incident.description,
        requester=incident.requester,
        impact=incident.impact,
        urgency=incident.urgency,
        priority=incident.priority,
        ticket_type=incident.ticket_type,
        category=incident.category,
        subcategory=incident.subcategory,
        service=incident.service,
        configuration_item=incident.configuration_item,
        opened_at=incident.opened_at,
        alert_fingerprint=command.alert.fingerprint if command.alert else None,
    )
    return incident, [created]


def edit_details(
    incident: Incident, fields: dict[str, Any], *, actor: str, now: datetime
) -> Outcome:
    ensure_not_terminal(incident, "edit")
    unknown = set(fields) - {*DESCRIPTIVE_FIELDS, "configuration_item"}
    if unknown:
        raise ValueError(f"not descriptive fields: {sorted(unknown)}")
    changes = {
        name: FieldChange(before=getattr(incident, name), after=value)
        for name, value in fields.items()
        if value != getattr(incident, name)
    }
    event = IncidentUpdated(
        incident_id=incident.id, actor=actor, status=incident.status, changes=changes
    )
    return evolve(
        incident, [event] if changes else [], now, **{k: c.after for k, c in changes.items()}
    )


def reprioritize(
    incident: Incident,
    *,
    impact: int,
    urgency: int,
    reason: str,
    actor: str,
    now: datetime,
    policy: Policy,
) -> Outcome:
    if not incident.is_open:
        raise Conflict(f"cannot reclassify an incident that is {incident.status}")
    if (impact, urgency) == (incident.impact, incident.urgency):
        return incident, []
    priority = policy.priority(impact, urgency)
    event = IncidentReprioritized(
        incident_id=incident.id,
        actor=actor,
        status=incident.status,
        impact=impact,
        urgency=urgency,
        priority=priority,
        previous_priority=incident.priority,
        reason=reason,
    )
    return evolve(incident, [event], now, impact=impact, urgency=urgency, priority=priority)


def assign(
    incident: Incident, group: GroupRef, assignee: str | None, *, actor: str, now: datetime,
    reason: str | None = None,
) -> Outcome:  # fmt: skip
    status = step(incident, "assign")
    if (group.name, assignee) == (incident.assignment_group, incident.assignee):
        return incident, []
    moved = incident.assignment_group is not None and group.name != incident.assignment_group
    count = incident.reassignment_count + int(moved)
    event = IncidentAssigned(
        incident_id=incident.id,
        actor=actor,
        status=status,  # type: ignore[arg-type]
        group=group.name,
        tier=group.tier,
        assignee=assignee,
        previous_group=incident.assignment_group,
        previous_assignee=incident.assignee,
        reassignment_count=count,
        reason=reason,
    )
    return evolve(
        incident, [event], now, status=status, assignment_group=group.name, tier=group.tier,
        assignee=assignee, reassignment_count=count, pending_reason=None,
    )  # fmt: skip


def escalate_functionally(
    incident: Incident, to_group: GroupRef, *, reason: str, actor: str, now: datetime
) -> Outcome:
    """Hand the incident to a group of the next support tier."""
    if incident.tier is None:
        raise Conflict("assign the incident to a group before escalating it")
    current = TIERS.index(incident.tier)
    if current == len(TIERS) - 1:
        raise Conflict("the incident is already with the last tier (L3)")
    if to_group.tier != TIERS[current + 1]:
        raise Conflict(f"functional escalation from {incident.tier} goes to {TIERS[current + 1]}")
    escalated = IncidentEscalated(
        incident_id=incident.id,
        actor=actor,
        status="assigned",
        kind="functional",
        reason=reason,
        from_group=incident.assignment_group,
        to_group=to_group.name,
        to_tier=to_group.tier,
    )
    bumped = replace(incident, escalation_count=incident.escalation_count + 1)
    moved, assigned = assign(bumped, to_group, None, actor=actor, now=now, reason=reason)
    return replace(moved, version=incident.version + 2), [escalated, *assigned]


def escalate_to_manager(
    incident: Incident, *, manager: str, reason: str, actor: str, now: datetime
) -> Outcome:
    if not incident.is_open:
        raise Conflict(f"cannot escalate an incident that is {incident.status}")
    event = IncidentEscalated(
        incident_id=incident.id,
        actor=actor,
        status=incident.status,
        kind="hierarchical",
        reason=reason,
        from_group=incident.assignment_group,
        manager=manager,
    )
    return evolve(
        incident,
        [event],
        now,
        escalated_to_manager=manager,
        escalation_count=incident.escalation_count + 1,
    )


def _status_change(
    incident: Incident, action: Action, *, actor: str, now: datetime,
    pending_reason: PendingReason | None = None, reason: str | None = None,
) -> Outcome:  # fmt: skip
    status = step(incident, action)
    event = IncidentStatusChanged(
        incident_id=incident.id,
        actor=actor,
        status=status,  # type: ignore[arg-type]
        previous_status=incident.status,
        pending_reason=pending_reason,
        reason=reason,
    )
    return evolve(incident, [event], now, status=status, pending_reason=pending_reason)


def start_work(incident: Incident, *, actor: str, now: datetime) -> Outcome:
    return _status_change(incident, "start", actor=actor, now=now)


def put_on_hold(
    incident: Incident,
    pending_reason: PendingReason,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
) -> Outcome:
    return _status_change(
        incident, "pend", actor=actor, now=now, pending_reason=pending_reason, reason=reason
    )


def resume(incident: Incident, *, actor: str, now: datetime) -> Outcome:
    return _status_change(incident, "resume", actor=actor, now=now)
