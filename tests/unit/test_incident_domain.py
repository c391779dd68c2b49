"""Incident domain rules, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.incidents.domain import (
    EditIncident,
    OpenIncident,
    edit_incident,
    open_incident,
    priority_of,
)
from shared.contracts.incidents import IncidentCreated, IncidentUpdated

NOW = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
LATER = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("impact", "urgency", "priority"),
    [
        (1, 1, "P1"), (1, 2, "P2"), (1, 3, "P3"),
        (2, 1, "P2"), (2, 2, "P3"), (2, 3, "P4"),
        (3, 1, "P3"), (3, 2, "P4"), (3, 3, "P5"),
    ],
)  # fmt: skip
def test_itil_default_priority_matrix(impact: int, urgency: int, priority: str) -> None:
    assert priority_of(impact, urgency) == priority


def opened():
    return open_incident(
        OpenIncident(title="Printer on fire", requester="alice", impact=2, urgency=2),
        incident_id="inc-1",
        number="INC0000001",
        now=NOW,
    )


def test_opening_an_incident_records_who_what_and_when() -> None:
    incident, events = opened()
    assert (incident.status, incident.priority, incident.version) == ("new", "P3", 1)
    assert incident.opened_at == NOW
    assert len(events) == 1 and isinstance(events[0], IncidentCreated)
    assert events[0].opened_at == NOW and events[0].priority == "P3"


def test_reclassifying_recomputes_priority_and_advances_the_version() -> None:
    incident, _ = opened()
    edited, events = edit_incident(incident, EditIncident(impact=1, urgency=1), by="ann", now=LATER)
    assert edited.priority == "P1" and edited.version == 2 and edited.updated_at == LATER
    assert events == [
        IncidentUpdated(
            incident_id="inc-1",
            changes={"impact": 1, "urgency": 1},
            priority="P1",
            updated_by="ann",
        )
    ]


def test_an_edit_that_changes_nothing_emits_nothing() -> None:
    incident, _ = opened()
    same, events = edit_incident(incident, EditIncident(title="Printer on fire"), by="a", now=LATER)
    assert same == incident and events == []
