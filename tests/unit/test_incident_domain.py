"""Incident domain rules, table-driven: priority matrix, lifecycle transitions, tiers, FCR,
alerts and the timeline."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.incidents import domain
from services.incidents.domain import (
    GroupRef,
    Incident,
    InvalidTransition,
    OpenIncident,
    Policy,
    parse_priority_matrix,
)
from services.incidents.domain.lifecycle import next_status
from services.incidents.domain.timeline import entry
from shared.contracts.alerts import AlertCleared, AlertFired
from shared.errors import Conflict

NOW = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
LATER = NOW + timedelta(minutes=30)
POLICY = Policy()
L1, L2, L3 = GroupRef("service-desk", "L1"), GroupRef("network", "L2"), GroupRef("core-net", "L3")


@pytest.mark.parametrize(
    ("impact", "urgency", "priority"),
    [
        (1, 1, "P1"), (1, 2, "P2"), (1, 3, "P3"),
        (2, 1, "P2"), (2, 2, "P3"), (2, 3, "P4"),
        (3, 1, "P3"), (3, 2, "P4"), (3, 3, "P5"),
    ],
)  # fmt: skip
def test_itil_default_priority_matrix(impact: int, urgency: int, priority: str) -> None:
    assert POLICY.priority(impact, urgency) == priority


def test_the_priority_matrix_is_configurable_and_validated() -> None:
    strict = parse_priority_matrix("P1 P1 P2 / P1 P2 P3 / P2 P3 P4")
    assert strict[(1, 2)] == "P1" and strict[(3, 3)] == "P4"
    for bad in ("P1 P2", "P1 P2 P3 / P2 P3 P4 / P3 P4 P9", ""):
        with pytest.raises(ValueError, match="priority matrix"):
            parse_priority_matrix(bad)


# The lifecycle, written out independently of the implementation's table.
STATUSES = ["new", "assigned", "in_progress", "pending", "resolved", "closed", "cancelled"]
ACTIONS = ["assign", "start", "pend", "resume", "resolve", "close", "reopen", "cancel"]
EXPECTED = {
    "new": {"assign": "assigned", "resolve": "resolved", "cancel": "cancelled"},
    "assigned": {
        "assign": "assigned", "start": "in_progress", "pend": "pending",
        "resolve": "resolved", "cancel": "cancelled",
    },
    "in_progress": {
        "assign": "assigned", "pend": "pending", "resolve": "resolved", "cancel": "cancelled",
    },
    "pending": {
        "resume": "in_progress", "assign": "assigned", "resolve": "resolved",
        "cancel": "cancelled",
    },
    "resolved": {"close": "closed", "reopen": "in_progress"},
    "closed": {},
    "cancelled": {},
}  # fmt: skip


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", ACTIONS)
def test_transition_table(status: str, action: str) -> None:
    expected = EXPECTED[status].get(action)
    if expected is not None:
        assert next_status(status, action) == expected  # type: ignore[arg-type]
        return
    with pytest.raises(InvalidTransition) as refused:
        next_status(status, action)  # type: ignore[arg-type]
    assert refused.value.details["allowed_next_states"] == sorted(set(EXPECTED[status].values()))
    assert status in str(refused.value)


def opened(**overrides: object) -> Incident:
    incident, _ = domain.open_incident(
        OpenIncident(title="Printer on fire", requester="alice", impact=2, urgency=2),
        incident_id="inc-1",
        number="INC0000001",
        now=NOW,
        policy=POLICY,
    )
    return replace(incident, **overrides)


def test_opening_records_who_what_and_when() -> None:
    incident, events = domain.open_incident(
        OpenIncident(title="Printer on fire", requester="alice", impact=2, urgency=2),
        incident_id="inc-1", number="INC0000001", now=NOW, policy=POLICY,
    )  # fmt: skip
    assert (incident.status, incident.priority, incident.version) == ("new", "P3", 1)
    assert incident.opened_at == incident.created_at == NOW
    assert events[0].event_type == "itsm.incident.created.v1" and events[0].actor == "alice"


def test_reclassifying_records_the_priority_change_with_its_reason() -> None:
    incident, events = domain.reprioritize(
        opened(), impact=1, urgency=1, reason="whole floor affected", actor="ann", now=LATER,
        policy=POLICY,
    )  # fmt: skip
    assert incident.priority == "P1" and incident.version == 2 and incident.updated_at == LATER
    assert (events[0].previous_priority, events[0].priority) == ("P3", "P1")
    assert events[0].reason == "whole floor affected"


def test_only_a_change_of_group_counts_as_reassignment() -> None:
    first, _ = domain.assign(opened(), L1, None, actor="ann", now=LATER)
    same_group, _ = domain.assign(first, L1, "bob", actor="ann", now=LATER)
    moved, events = domain.assign(same_group, L2, None, actor="ann", now=LATER)
    assert [first.reassignment_count, same_group.reassignment_count] == [0, 0]
    assert moved.reassignment_count == 1 and moved.status == "assigned" and moved.tier == "L2"
    assert events[0].previous_group == "service-desk"


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [(L1, L2, True), (L2, L3, True), (L1, L3, False), (L2, L1, False), (L3, L3, False)],
)
def test_functional_escalation_goes_to_the_next_tier(
    current: GroupRef, target: GroupRef, allowed: bool
) -> None:
    incident, _ = domain.assign(opened(), current, None, actor="ann", now=NOW)
    if not allowed:
        with pytest.raises(Conflict):
            domain.escalate_functionally(incident, target, reason="needs net", actor="a", now=LATER)
        return
    escalated, events = domain.escalate_functionally(
        incident, target, reason="needs net", actor="ann", now=LATER
    )
    assert [e.event_type.split(".")[2] for e in events] == ["escalated", "assigned"]
    assert escalated.version == incident.version + 2
    assert escalated.assignment_group == target.name and escalated.escalation_count == 1


def test_hierarchical_escalation_names_the_manager() -> None:
    incident, events = domain.escalate_to_manager(
        opened(), manager="maria", reason="VIP affected", actor="ann", now=LATER
    )
    assert incident.escalated_to_manager == "maria" and events[0].kind == "hierarchical"


def test_hold_and_resume_carry_the_pending_reason() -> None:
    working, _ = domain.start_work(
        domain.assign(opened(), L1, "bob", actor="a", now=NOW)[0], actor="bob", now=NOW
    )
    held, events = domain.put_on_hold(working, "awaiting_vendor", actor="bob", now=LATER)
    assert held.status == "pending" and held.pending_reason == "awaiting_vendor"
    assert events[0].previous_status == "in_progress"
    resumed, _ = domain.resume(held, actor="bob", now=LATER)
    assert resumed.status == "in_progress" and resumed.pending_reason is None


def test_the_first_public_reply_by_staff_is_the_first_response() -> None:
    by_requester, events = domain.reply(
        opened(), "any news?", actor="alice", by_staff=False, now=NOW
    )
    assert by_requester.first_response_at is None and not events[0].first_response
    answered, events = domain.reply(by_requester, "on it", actor="ann", by_staff=True, now=LATER)
    assert answered.first_response_at == LATER and events[0].first_response
    again, events = domain.reply(
        answered, "still on it", actor="ann", by_staff=True, now=LATER + timedelta(hours=1)
    )
    assert again.first_response_at == LATER and not events[0].first_response


def resolved_by(*steps: str) -> Incident:
    incident, _ = domain.assign(opened(), L1, "bob", actor="a", now=NOW)
    for step in steps:
        if step == "reassign":
            incident, _ = domain.assign(
                incident, GroupRef("desk-2", "L1"), None, actor="a", now=NOW
            )
        elif step == "escalate":
            incident, _ = domain.escalate_functionally(incident, L2, reason="r", actor="a", now=NOW)
        elif step == "manager":
            incident, _ = domain.escalate_to_manager(
                incident, manager="m", reason="r", actor="a", now=NOW
            )
    resolved, _ = domain.resolve(
        incident, code="fixed", notes="replaced toner", actor="bob", now=LATER
    )
    return resolved


@pytest.mark.parametrize(
    ("steps", "fcr"),
    [((), True), (("reassign",), False), (("escalate",), False), (("manager",), False)],
)
def test_first_contact_resolution(steps: tuple[str, ...], fcr: bool) -> None:
    assert resolved_by(*steps).first_contact_resolution is fcr


def test_resolution_needs_a_code_and_notes() -> None:
    with pytest.raises(ValueError, match="code and notes"):
        domain.resolve(opened(), code="fixed", notes="  ", actor="a", now=NOW)


def test_reopen_only_within_the_window_and_it_clears_the_resolution() -> None:
    resolved = resolved_by()
    reopened, events = domain.reopen(
        resolved, reason="back again", actor="alice", now=LATER + timedelta(days=6), policy=POLICY
    )
    assert reopened.status == "in_progress" and reopened.reopen_count == 1
    assert reopened.resolved_at is None and events[0].reopen_count == 1
    with pytest.raises(Conflict, match="reopen window"):
        domain.reopen(
            resolved, reason="late", actor="alice", now=LATER + timedelta(days=8), policy=POLICY
        )


def test_auto_close_is_due_after_the_configured_days() -> None:
    resolved = resolved_by()
    assert not domain.due_for_auto_close(resolved, LATER + timedelta(days=2), POLICY)
    assert domain.due_for_auto_close(resolved, LATER + timedelta(days=3), POLICY)
    closed, events = domain.close(resolved, "automatic", actor="system", now=LATER)
    assert closed.status == "closed" and events[0].closure == "automatic"


def test_csat_is_given_once_after_resolution() -> None:
    with pytest.raises(Conflict, match="resolved"):
        domain.rate(opened(), score=5, comment="", actor="alice", now=NOW)
    rated, events = domain.rate(resolved_by(), score=4, comment="quick", actor="alice", now=LATER)
    assert rated.csat_score == 4 and events[0].score == 4
    with pytest.raises(Conflict, match="already"):
        domain.rate(rated, score=1, comment="", actor="alice", now=LATER)


def test_major_incidents_and_parent_links() -> None:
    parent, _ = domain.declare_major(opened(), reason="payroll down", actor="maria", now=NOW)
    assert parent.major
    with pytest.raises(Conflict, match="already"):
        domain.declare_major(parent, reason="again", actor="maria", now=NOW)
    child = opened(id="inc-2", number="INC0000002")
    linked, events = domain.link_to_parent(child, parent, actor="ann", now=NOW)
    assert linked.parent_id == "inc-1" and events[0].parent_id == "inc-1"
    with pytest.raises(Conflict, match="own parent"):
        domain.link_to_parent(parent, parent, actor="ann", now=NOW)
    with pytest.raises(Conflict, match="itself a child"):
        domain.link_to_parent(opened(id="inc-3", number="INC3"), linked, actor="ann", now=NOW)


def test_terminal_incidents_take_no_more_work() -> None:
    cancelled, _ = domain.cancel(opened(), reason="duplicate", actor="ann", now=NOW)
    for attempt in (
        lambda: domain.reply(cancelled, "hi", actor="a", by_staff=True, now=NOW),
        lambda: domain.edit_details(cancelled, {"title": "x"}, actor="a", now=NOW),
        lambda: domain.change_watchers(cancelled, add=["x"], remove=[], actor="a", now=NOW),
    ):
        with pytest.raises(Conflict):
            attempt()


def test_watchers_are_added_and_removed_without_duplicates() -> None:
    watched, events = domain.change_watchers(
        opened(), add=["bob", "bob", "carol"], remove=[], actor="a", now=NOW
    )
    assert watched.watchers == ("bob", "carol") and events[0].added == ["bob", "carol"]
    unwatched, events = domain.change_watchers(watched, add=[], remove=["bob"], actor="a", now=NOW)
    assert unwatched.watchers == ("carol",) and events[0].removed == ["bob"]


def fired(starts: datetime, severity: str = "critical") -> AlertFired:
    return AlertFired(
        fingerprint="fp-1", alertname="DiskFull", starts_at=starts, severity=severity,
        summary="Disk full on db-1", service="billing", instance="db-1:9100",
    )  # fmt: skip


def test_an_alert_opens_an_incident_whose_clock_starts_at_the_alert() -> None:
    began = NOW - timedelta(minutes=7)
    incident, events = domain.open_from_alert(
        fired(began), incident_id="i", number="INC1", reporter="monitoring", now=NOW, policy=POLICY
    )
    assert incident.opened_at == began and incident.created_at == NOW
    assert incident.priority == "P1" and incident.title == "Disk full on db-1"
    assert incident.alert.occurrences == 1 and events[0].alert_fingerprint == "fp-1"


def test_repeated_firings_are_counted_once_each() -> None:
    incident, _ = domain.open_from_alert(
        fired(NOW), incident_id="i", number="INC1", reporter="monitoring", now=NOW, policy=POLICY
    )
    again, events = domain.record_firing(incident, fired(LATER), actor="monitoring", now=LATER)
    assert again.alert.occurrences == 2 and events[0].occurrences == 2
    resent, events = domain.record_firing(again, fired(LATER), actor="monitoring", now=LATER)
    assert resent == again and events == []


@pytest.mark.parametrize(("auto_resolve", "status"), [(True, "resolved"), (False, "new")])
def test_a_cleared_alert_notes_and_resolves_when_configured(
    auto_resolve: bool, status: str
) -> None:
    policy = Policy(alert_auto_resolve=auto_resolve)
    incident, _ = domain.open_from_alert(
        fired(NOW), incident_id="i", number="INC1", reporter="monitoring", now=NOW, policy=policy
    )
    cleared = AlertCleared(**fired(NOW).model_dump(), ends_at=LATER)
    after, events = domain.clear_alert(
        incident, cleared, actor="monitoring", now=LATER, policy=policy
    )
    assert after.status == status and events[0].event_type == "itsm.incident.work_note_added.v1"
    assert after.version == incident.version + len(events)


def test_a_timeline_entry_records_actor_time_and_before_after() -> None:
    before = opened()
    after, events = domain.reprioritize(
        before, impact=1, urgency=2, reason="more users", actor="ann", now=LATER, policy=POLICY
    )
    line = entry(before, after, events, at=LATER)
    assert line["actor"] == "ann" and line["at"] == LATER and line["sequences"] == [2]
    assert line["changes"]["priority"] == {"before": "P3", "after": "P2"}
    assert line["changes"]["impact"] == {"before": 2, "after": 1}
    assert line["reason"] == "more users" and line["visibility"] == "public"
