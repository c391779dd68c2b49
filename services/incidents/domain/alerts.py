"""Monitoring alerts into incidents: open one per firing fingerprint, deduplicate further firings
onto it, and resolve it when the alert clears (if configured)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from services.incidents.domain.actions import OpenIncident, open_incident
from services.incidents.domain.model import AlertLink, Incident, Outcome, Policy, evolve
from services.incidents.domain.resolution import resolve
from services.incidents.domain.work import add_work_note
from shared.contracts.alerts import AlertCleared, AlertData, AlertFired
from shared.contracts.incidents import IncidentAlertOccurred

# Severity -> (impact, urgency): critical pages are P1 under the ITIL matrix, info is P5.
SEVERITY = {"critical": (1, 1), "error": (2, 1), "warning": (2, 2), "info": (3, 3)}
RECENT_FIRINGS_KEPT = 500
AUTO_RESOLUTION_CODE = "resolved_by_monitoring"


def firing_key(alert: AlertData) -> str:
    """One firing of an alert: Alertmanager re-sends a firing alert with the same start time, and a
    redelivered record has it too, so either counts once."""
    return alert.starts_at.isoformat()


def counted(incident: Incident | None, alert: AlertData) -> bool:
    """Whether this firing of the alert is on `incident` already: a firing redelivered, or
    re-sent by Alertmanager, after its incident was resolved must not open another one (a new
    firing of the same alert has a new start)."""
    link = incident.alert if incident is not None else None
    return (
        link is not None
        and link.fingerprint == alert.fingerprint
        and firing_key(alert) in link.recent_starts
    )


def open_from_alert(
    alert: AlertFired,
    *,
    incident_id: str,
    number: str,
    reporter: str,
    now: datetime,
    policy: Policy,
) -> Outcome:
    impact, urgency = SEVERITY[alert.severity]
    title = alert.summary or alert.alertname
    command = OpenIncident(
        title=title[:200],
        description=alert.description,
        requester=reporter,
        impact=impact,
        urgency=urgency,
        category="monitoring",
        subcategory=alert.alertname[:200],
        service=alert.service,
        configuration_item=alert.instance,
        opened_at=alert.starts_at,  # the clock starts when the disruption began, not at intake
        alert=AlertLink(
            fingerprint=alert.fingerprint,
            occurrences=1,
            last_seen=now,
            recent_starts=(firing_key(alert),),
        ),
    )
    return open_incident(command, incident_id=incident_id, number=number, now=now, policy=policy)


def record_firing(incident: Incident, alert: AlertFired, *, actor: str, now: datetime) -> Outcome:
    """Count a further firing on the open incident; a firing already counted changes nothing."""
    link = incident.alert
    if link is None or link.fingerprint != alert.fingerprint:
        raise ValueError("the incident was not opened from this alert")
    key = firing_key(alert)
    if key in link.recent_starts:
        return incident, []
    updated = AlertLink(
        fingerprint=link.fingerprint,
        occurrences=link.occurrences + 1,
        last_seen=now,
        recent_starts=(*link.recent_starts, key)[-RECENT_FIRINGS_KEPT:],
    )
    event = IncidentAlertOccurred(
        incident_id=incident.id,
        actor=actor,
        status=incident.status,
        fingerprint=alert.fingerprint,
        occurrences=updated.occurrences,
        starts_at=alert.starts_at,
        last_seen=now,
    )
    return evolve(incident, [event], now, alert=updated)


def clear_alert(
    incident: Incident, alert: AlertCleared, *, actor: str, now: datetime, policy: Policy
) -> Outcome:
    """Note that the alert cleared; resolve the incident too when the policy says so."""
    ended = alert.ends_at.isoformat()
    noted, note_events = add_work_note(
        incident,
        f"Alert {alert.alertname} ({alert.fingerprint}) cleared at {ended}.",
        actor=actor,
        now=now,
    )
    if not (policy.alert_auto_resolve and noted.is_open):
        return noted, note_events
    resolved, resolve_events = resolve(
        noted,
        code=AUTO_RESOLUTION_CODE,
        notes=f"The monitoring alert {alert.alertname} cleared at {ended}.",
        actor=actor,
        now=now,
    )
    return replace(resolved, version=incident.version + 2), [*note_events, *resolve_events]
