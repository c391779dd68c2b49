"""An incident's timeline: one entry per action, with actor, time and each field's before/after."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.incidents.domain.model import Incident
from shared.audit import audit_entry
from shared.contracts.incidents import IncidentEvent

# Shown to staff only; everything else is visible to the requester too.
INTERNAL_EVENTS = frozenset({"work_note_added", "escalated", "assigned", "linked"})


def entry(
    before: Incident | None, after: Incident, events: list[IncidentEvent], *, at: datetime
) -> dict[str, Any]:
    return audit_entry(
        before, after, events, at=at, internal=INTERNAL_EVENTS, untracked=frozenset({"alert"})
    )
