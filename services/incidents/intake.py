"""Background use cases: monitoring alerts from the ingest topic, resolving children with their
parent, and closing incidents left resolved past the configured number of days.

Each is idempotent, since the bus delivers at least once: a firing already counted, a child
already resolved or an incident already closed changes nothing.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from services.incidents import domain
from services.incidents.handlers import Incidents, commit, store_new
from shared.bus.port import TransientError
from shared.contracts.alerts import AlertCleared, AlertFired
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import IncidentResolved
from shared.ids import uuid7
from shared.store.errors import ConcurrencyConflict

log = structlog.get_logger(__name__)
FIRED = AlertFired.event_type
CLEARED = AlertCleared.event_type
MONITORING = "monitoring"


async def on_alert(incidents: Incidents, envelope: Envelope, *, now: datetime) -> None:
    """A firing opens an incident or is counted on the open one with its fingerprint; a clearing
    adds a note and resolves the incident when configured."""
    actor = f"{MONITORING}:{envelope.source}"[:200]
    if envelope.type == FIRED:
        fired = AlertFired.model_validate(envelope.data)
        incident = await incidents.repo.open_for_alert(fired.fingerprint)
        if incident is None:
            if domain.counted(await incidents.repo.last_for_alert(fired.fingerprint), fired):
                return  # this firing's incident was resolved since: a redelivery, not news
            number = f"INC{await incidents.next_number():07d}"
            outcome = domain.open_from_alert(
                fired, incident_id=uuid7(), number=number, reporter=actor, now=now,
                policy=incidents.policy,
            )  # fmt: skip
            opened = await store_new(incidents, outcome, now=now)
            await incidents.repo.remember_alert(fired.fingerprint, opened.id)
            return
        # A storm's repeats are counted on the incident, not written one by one to its timeline.
        firing = domain.record_firing(incident, fired, actor=actor, now=now)
        await commit(incidents, incident, firing, now=now, timeline=False)
    elif envelope.type == CLEARED:
        cleared = AlertCleared.model_validate(envelope.data)
        incident = await incidents.repo.open_for_alert(cleared.fingerprint)
        if incident is None:
            return  # nothing open for it (already resolved, or it never fired here)
        outcome = domain.clear_alert(
            incident, cleared, actor=actor, now=now, policy=incidents.policy
        )
        await commit(incidents, incident, outcome, now=now)


async def on_incident_event(incidents: Incidents, envelope: Envelope, *, now: datetime) -> None:
    """A resolved parent resolves its open children, with the parent's resolution."""
    if envelope.type != IncidentResolved.event_type:
        return
    resolved = IncidentResolved.model_validate(envelope.data)
    if resolved.cascaded_from is not None:
        return
    for child in await incidents.repo.open_children(resolved.incident_id):
        outcome = domain.resolve(
            child,
            code=resolved.resolution_code,
            notes=f"Resolved with its parent incident: {resolved.resolution_notes}",
            actor=resolved.actor,
            now=now,
            cascaded_from=resolved.incident_id,
        )
        try:
            await commit(incidents, child, outcome, now=now)
        except ConcurrencyConflict as exc:
            # The child changed under us: retry the event, which re-reads the open children.
            raise TransientError(f"child {child.id} changed while resolving it") from exc


async def close_overdue(incidents: Incidents, *, now: datetime) -> int:
    """Close incidents resolved longer ago than the policy allows; returns how many."""
    closed = 0
    cutoff = now - incidents.policy.auto_close_after
    for incident in await incidents.repo.resolved_before(cutoff):
        if not domain.due_for_auto_close(incident, now, incidents.policy):
            continue
        try:
            await commit(
                incidents,
                incident,
                domain.close(incident, "automatic", actor="system", now=now),
                now=now,
            )
            closed += 1
        except ConcurrencyConflict:
            continue  # someone reopened or closed it meanwhile
    return closed
