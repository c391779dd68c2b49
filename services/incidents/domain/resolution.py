"""Resolution, closure, reopening, cancellation and satisfaction (CSAT, first-contact
resolution)."""

from __future__ import annotations

from datetime import datetime

from services.incidents.domain.model import (
    Incident,
    Outcome,
    Policy,
    evolve,
    step,
)
from shared.contracts.incidents import (
    Closure,
    IncidentCancelled,
    IncidentClosed,
    IncidentRated,
    IncidentReopened,
    IncidentResolved,
)
from shared.errors import Conflict, Invalid


def first_contact_resolution(incident: Incident) -> bool:
    """Resolved by the first (L1) group it was given to: no reassignment, escalation or reopen."""
    return (
        incident.tier == "L1"
        and incident.reassignment_count == 0
        and incident.escalation_count == 0
        and incident.reopen_count == 0
    )


def resolve(
    incident: Incident,
    *,
    code: str,
    notes: str,
    actor: str,
    now: datetime,
    cascaded_from: str | None = None,
) -> Outcome:
    if not code.strip() or not notes.strip():
        raise Invalid("a resolution needs a code and notes")
    status = step(incident, "resolve")
    fcr = first_contact_resolution(incident)
    event = IncidentResolved(
        incident_id=incident.id, actor=actor, status="resolved", resolution_code=code,
        resolution_notes=notes, resolved_at=now, first_contact_resolution=fcr,
        group=incident.assignment_group, tier=incident.tier, cascaded_from=cascaded_from,
    )  # fmt: skip
    return evolve(
        incident, [event], now, status=status, pending_reason=None, resolution_code=code,
        resolution_notes=notes, resolved_at=now, first_contact_resolution=fcr,
    )  # fmt: skip


def close(incident: Incident, closure: Closure, *, actor: str, now: datetime) -> Outcome:
    status = step(incident, "close")
    event = IncidentClosed(incident_id=incident.id, actor=actor, status="closed", closure=closure)
    return evolve(incident, [event], now, status=status, closed_at=now, closure=closure)


def due_for_auto_close(incident: Incident, now: datetime, policy: Policy) -> bool:
    return (
        incident.status == "resolved"
        and incident.resolved_at is not None
        and now - incident.resolved_at >= policy.auto_close_after
    )


def reopen(
    incident: Incident, *, reason: str, actor: str, now: datetime, policy: Policy
) -> Outcome:
    status = step(incident, "reopen")
    assert incident.resolved_at is not None
    if now - incident.resolved_at > policy.reopen_window:
        days = policy.reopen_window.days
        raise Conflict(
            f"the reopen window of {days} days after resolution has passed; open a new incident"
        )
    count = incident.reopen_count + 1
    event = IncidentReopened(
        incident_id=incident.id,
        actor=actor,
        status="in_progress",
        reason=reason,
        reopen_count=count,
    )
    return evolve(
        incident, [event], now, status=status, reopen_count=count, resolution_code=None,
        resolution_notes=None, resolved_at=None, first_contact_resolution=None,
    )  # fmt: skip


def cancel(incident: Incident, *, reason: str, actor: str, now: datetime) -> Outcome:
    status = step(incident, "cancel")
    event = IncidentCancelled(
        incident_id=incident.id, actor=actor, status="cancelled", reason=reason
    )
    return evolve(incident, [event], now, status=status, pending_reason=None)


def rate(incident: Incident, *, score: int, comment: str, actor: str, now: datetime) -> Outcome:
    if incident.status not in ("resolved", "closed"):
        raise Conflict("an incident can be rated once it is resolved")
    if incident.csat_score is not None:
        raise Conflict("this incident has already been rated")
    event = IncidentRated(
        incident_id=incident.id, actor=actor, status=incident.status, score=score, comment=comment
    )
    return evolve(incident, [event], now, csat_score=score, csat_comment=comment)
