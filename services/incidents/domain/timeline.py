"""An incident's timeline: one entry per action, with actor, time and each field's before/after."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from services.incidents.domain.model import Incident
from shared.contracts.incidents import IncidentEvent

# Shown to staff only; everything else is visible to the requester too.
INTERNAL_EVENTS = frozenset({"work_note_added", "escalated", "assigned", "linked"})
_UNTRACKED = frozenset({"version", "updated_at", "alert"})


def short_name(event: IncidentEvent) -> str:
    return event.event_type.split(".")[2]


def field_changes(before: Incident, after: Incident) -> dict[str, dict[str, Any]]:
    old, new = asdict(before), asdict(after)
    return {
        name: {"before": old[name], "after": new[name]}
        for name in new
        if name not in _UNTRACKED and old[name] != new[name]
    }


def entry(
    before: Incident | None, after: Incident, events: list[IncidentEvent], *, at: datetime
) -> dict[str, Any]:
    kinds = [short_name(e) for e in events]
    bodies = [b for e in events if (b := getattr(e, "body", None))]
    reasons = [r for e in events if (r := getattr(e, "reason", None))]
    return {
        "at": at,
        "actor": events[0].actor,
        "events": kinds,
        "sequences": list(range(after.version - len(events) + 1, after.version + 1)),
        "status": after.status,
        "changes": {} if before is None else field_changes(before, after),
        "body": bodies[0] if bodies else None,
        "reason": reasons[0] if reasons else None,
        "visibility": "internal" if set(kinds) <= INTERNAL_EVENTS else "public",
    }
