"""Collaboration on an incident: public replies (the first by staff is the first response),
internal work notes, watchers, major incidents and parent/child links."""

from __future__ import annotations

from datetime import datetime

from services.incidents.domain.model import (
    Incident,
    Outcome,
    ensure_not_terminal,
    evolve,
)
from shared.contracts.incidents import (
    IncidentLinked,
    IncidentMajorDeclared,
    IncidentReplied,
    IncidentWatchersChanged,
    IncidentWorkNoteAdded,
)
from shared.errors import Conflict


def reply(incident: Incident, body: str, *, actor: str, by_staff: bool, now: datetime) -> Outcome:
    ensure_not_terminal(incident, "reply")
    first = by_staff and incident.first_response_at is None
    event = IncidentReplied(
        incident_id=incident.id, actor=actor, status=incident.status, body=body, by_staff=by_staff,
        first_response=first,
    )  # fmt: skip
    return evolve(
        incident, [event], now, first_response_at=now if first else incident.first_response_at
    )


def add_work_note(incident: Incident, body: str, *, actor: str, now: datetime) -> Outcome:
    event = IncidentWorkNoteAdded(
        incident_id=incident.id, actor=actor, status=incident.status, body=body
    )
    return evolve(incident, [event], now)


def change_watchers(
    incident: Incident, *, add: list[str], remove: list[str], actor: str, now: datetime
) -> Outcome:
    ensure_not_terminal(incident, "change watchers")
    watchers = [w for w in incident.watchers if w not in remove]
    watchers += [w for w in dict.fromkeys(add) if w not in watchers]
    added = [w for w in watchers if w not in incident.watchers]
    removed = [w for w in incident.watchers if w not in watchers]
    event = IncidentWatchersChanged(
        incident_id=incident.id, actor=actor, status=incident.status, added=added, removed=removed,
        watchers=watchers,
    )  # fmt: skip
    return evolve(incident, [event] if added or removed else [], now, watchers=tuple(watchers))


def declare_major(incident: Incident, *, reason: str, actor: str, now: datetime) -> Outcome:
    if not incident.is_open:
        raise Conflict(f"cannot declare a {incident.status} incident major")
    if incident.major:
        raise Conflict("the incident is already a major incident")
    event = IncidentMajorDeclared(
        incident_id=incident.id,
        actor=actor,
        status=incident.status,
        reason=reason,
        priority=incident.priority,
    )
    return evolve(incident, [event], now, major=True)


def link_to_parent(child: Incident, parent: Incident, *, actor: str, now: datetime) -> Outcome:
    if child.id == parent.id:
        raise Conflict("an incident cannot be its own parent")
    if parent.parent_id is not None:
        raise Conflict(f"{parent.number} is itself a child; link to its parent {parent.parent_id}")
    if child.parent_id is not None:
        raise Conflict(f"{child.number} already has a parent")
    if not (child.is_open and parent.is_open):
        raise Conflict("both incidents must be open to link them")
    event = IncidentLinked(
        incident_id=child.id, actor=actor, status=child.status, parent_id=parent.id
    )
    return evolve(child, [event], now, parent_id=parent.id)
