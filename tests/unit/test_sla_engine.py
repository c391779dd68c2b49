"""The SLA engine on fixed stories: weekends and holidays, DST, pause and resume, a priority
change mid-flight, an alert-born incident, breaches while paused, reopening, OLAs, redelivery."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import jsonschema
import pytest

from services.sla.domain import (
    TRANSITIONS,
    BusinessCalendar,
    OlaPolicy,
    PolicyCatalog,
    SlaPolicy,
    SlaState,
    TicketEvent,
    apply,
    apply_record,
    due_alerts,
    new_state,
    next_wakeup,
    replay,
    snapshot,
)
from services.sla.domain.timers import start, step
from shared.contracts import contract_for, json_schemas
from shared.contracts.changes import ChangeSubmitted
from shared.contracts.incidents import (
    IncidentAssigned,
    IncidentCancelled,
    IncidentClosed,
    IncidentCreated,
    IncidentEvent,
    IncidentReopened,
    IncidentReplied,
    IncidentReprioritized,
    IncidentResolved,
    IncidentStatusChanged,
    IncidentUpdated,
    IncidentWorkNoteAdded,
    PendingReason,
    Priority,
)
from shared.contracts.sla import SlaEvent, SlaWarning
from shared.contracts.topics import Topic

H = timedelta(hours=1)
M = timedelta(minutes=1)

OFFICE = BusinessCalendar.weekly(
    "berlin-office", "Europe/Berlin", dict.fromkeys(range(5), "08:00-12:00, 13:00-17:00"),
    holidays=[date(2026, 4, 3), date(2026, 4, 6)],
)  # fmt: skip
NY_OFFICE = BusinessCalendar.weekly(
    "ny-office", "America/New_York", dict.fromkeys(range(5), "09:00-17:00")
)
ALWAYS = BusinessCalendar("24x7")


def sla(
    pid: str, priority: Priority, calendar: BusinessCalendar, response: timedelta | None,
    resolution: timedelta | None, **kwargs: Any,
) -> SlaPolicy:  # fmt: skip
    return SlaPolicy(
        id=pid, version=kwargs.pop("version", 1), name=f"{priority} incidents", ticket_type="incident",
        priority=priority, calendar=calendar, first_response=response, resolution=resolution, **kwargs,
    )  # fmt: skip


CATALOG = PolicyCatalog(
    sla=(
        sla("inc-p1", "P1", ALWAYS, 15 * M, 4 * H),
        sla("inc-p2", "P2", OFFICE, 1 * H, 8 * H),
        sla("inc-p3", "P3", OFFICE, 4 * H, 24 * H),
        sla("inc-p4-ny", "P4", NY_OFFICE, 8 * H, 40 * H),
    ),
    ola=(
        OlaPolicy("ola-network", 1, "Network OLA", "network", 2 * H, OFFICE),
        OlaPolicy("ola-database", 1, "Database OLA", "database", 4 * H, OFFICE),
    ),
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class Story:
    """One incident's events, shaped the way the incidents service emits them."""

    def __init__(
        self, at: datetime, priority: Priority = "P2", opened_at: datetime | None = None,
        service: str | None = None, incident_id: str = "inc-1",
    ) -> None:  # fmt: skip
        self.id = incident_id
        self.status = "new"
        self.group: str | None = None
        self.priority: Priority = priority
        self.events: list[TicketEvent] = []
        self.add(
            IncidentCreated(
                **self.base("new"), number="INC0000001", title="Mail is down", requester="rita",
                impact=2, urgency=2, priority=priority, opened_at=opened_at or at, service=service,
            ),
            at,
        )  # fmt: skip

    def base(self, status: str) -> dict[str, Any]:
        self.status = status
        return {"incident_id": self.id, "actor": "agent", "status": status}

    def add(self, event: IncidentEvent, at: datetime) -> TicketEvent:
        self.events.append(TicketEvent(event, at, len(self.events) + 1))
        return self.events[-1]

    def assign(self, group: str, at: datetime) -> TicketEvent:
        previous, self.group = self.group, group
        return self.add(
            IncidentAssigned(
                **self.base("assigned"), group=group, tier="L2", assignee=None,
                previous_group=previous, previous_assignee=None, reassignment_count=0,
            ),
            at,
        )  # fmt: skip

    def status_change(
        self, status: str, at: datetime, reason: PendingReason | None = None
    ) -> TicketEvent:
        previous = self.status
        return self.add(
            IncidentStatusChanged(**self.base(status), previous_status=previous, pending_reason=reason),
            at,
        )  # fmt: skip

    def pend(self, at: datetime, reason: PendingReason = "awaiting_requester") -> TicketEvent:
        return self.status_change("pending", at, reason)

    def resume(self, at: datetime) -> TicketEvent:
        return self.status_change("in_progress", at)

    def reply(self, at: datetime, *, by_staff: bool = True, first: bool = True) -> TicketEvent:
        return self.add(
            IncidentReplied(**self.base(self.status), body="On it", by_staff=by_staff, first_response=first),
            at,
        )  # fmt: skip

    def reprioritize(self, priority: Priority, at: datetime) -> TicketEvent:
        previous, self.priority = self.priority, priority
        return self.add(
            IncidentReprioritized(
                **self.base(self.status), impact=1, urgency=1, priority=priority,
                previous_priority=previous, reason="business impact",
            ),
            at,
        )  # fmt: skip

    def change_service(self, service: str, at: datetime) -> TicketEvent:
        return self.add(
            IncidentUpdated(**self.base(self.status), changes={"service": {"before": None, "after": service}}),
            at,
        )  # fmt: skip

    def note(self, at: datetime) -> TicketEvent:
        return self.add(IncidentWorkNoteAdded(**self.base(self.status), body="looking"), at)

    def resolve(self, at: datetime) -> TicketEvent:
        return self.add(
            IncidentResolved(
                **self.base("resolved"), resolution_code="fixed", resolution_notes="restarted",
                resolved_at=at, first_contact_resolution=False, group=self.group, tier=None,
            ),
            at,
        )  # fmt: skip

    def reopen(self, at: datetime) -> TicketEvent:
        return self.add(
            IncidentReopened(**self.base("in_progress"), reason="still broken", reopen_count=1), at
        )

    def close(self, at: datetime) -> TicketEvent:
        return self.add(IncidentClosed(**self.base("closed"), closure="confirmed"), at)

    def cancel(self, at: datetime) -> TicketEvent:
        return self.add(IncidentCancelled(**self.base("cancelled"), reason="duplicate"), at)


def run(
    events: Iterable[TicketEvent], catalog: PolicyCatalog = CATALOG, state: SlaState | None = None
) -> tuple[SlaState, list[SlaEvent]]:
    items = list(events)
    state = state or new_state(items[0].event.incident_id)
    facts: list[SlaEvent] = []
    for item in items:
        state, new = apply(state, item.event, at=item.at, catalog=catalog, sequence=item.sequence)
        facts += new
    return state, facts


def kinds(facts: Sequence[SlaEvent], metric: str | None = None) -> list[str]:
    names = []
    for f in facts:
        if metric is None or f.metric == metric:
            name = f.event_type.split(".")[2]
            names.append(f"{name}:{f.threshold}" if isinstance(f, SlaWarning) else name)
    return names


def view(state: SlaState, metric: str, now: datetime) -> Any:
    return next(v for v in snapshot(state, now) if v.metric == metric)


# --- starting, weekends, holidays, DST -------------------------------------------------------


def test_created_starts_response_and_resolution_on_the_policy_calendar() -> None:
    friday_4pm = utc(2026, 3, 13, 15)  # 16:00 CET
    state, facts = run(Story(friday_4pm).events)
    assert kinds(facts) == ["started", "started"]
    response, resolution = facts
    assert (response.metric, response.deadline) == ("first_response", utc(2026, 3, 13, 16))  # 17:00
    # 8 business hours: 1 h Friday, then Monday 08-12 and 13-16 (CET): over the weekend
    assert (resolution.metric, resolution.deadline) == ("resolution", utc(2026, 3, 16, 15))
    assert (resolution.policy_id, resolution.policy_version, resolution.calendar) == (
        "inc-p2", 1, "berlin-office",
    )  # fmt: skip
    assert resolution.target_seconds == 8 * 3600 and resolution.elapsed_seconds == 0
    assert state.version == 2


def test_holidays_push_the_deadline() -> None:
    thursday_4pm = utc(2026, 4, 2, 14)  # 16:00 CEST before Good Friday; Easter Monday too
    state, _ = run(Story(thursday_4pm).events)
    assert state.timer("resolution").deadline == utc(2026, 4, 7, 14)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("created", "priority", "deadline"),
    [
        (utc(2026, 3, 27, 15), "P2", utc(2026, 3, 30, 14)),  # Berlin spring forward: CET -> CEST
        (utc(2026, 10, 23, 14), "P2", utc(2026, 10, 26, 15)),  # Berlin fall back: CEST -> CET
        (utc(2026, 3, 6, 21), "P4", utc(2026, 3, 13, 20)),  # New York spring forward: EST -> EDT
        (utc(2026, 10, 30, 20), "P4", utc(2026, 11, 6, 21)),  # New York fall back: EDT -> EST
    ],
)
def test_deadlines_across_dst_keep_office_hours_local(
    created: datetime, priority: Priority, deadline: datetime
) -> None:
    # Created at 16:00 local on a Friday: 1 h that day, the rest from Monday 08:00 (Berlin, 8 h
    # target) or 09:00 (New York, 40 h target: a full week), in the new offset.
    state, _ = run(Story(created, priority=priority).events)
    assert state.timer("resolution").deadline == deadline  # type: ignore[union-attr]


# --- alerts, first response ------------------------------------------------------------------


def test_warnings_then_breach_each_once_and_next_wakeup_walks_through_them() -> None:
    monday_8am = utc(2026, 3, 16, 7)
    state, _ = run(Story(monday_8am, priority="P3").events)
    state, _ = run([Story(monday_8am).reply(monday_8am + 10 * M)], state=state)  # response met
    assert next_wakeup(state) == utc(2026, 3, 17, 11)  # 50 % of 24 h: Mon 8 h + Tue 08-12 CET
    seen = []
    while (wake := next_wakeup(state)) is not None:
        state, alerts = due_alerts(state, wake)
        assert alerts and all(a.occurred_at == wake for a in alerts)
        seen += kinds(alerts)
        assert due_alerts(state, wake) == (state, [])  # a repeated tick emits nothing
    assert seen == ["warning:50", "warning:75", "warning:90", "breached"]
    assert state.timer("resolution").deadline == utc(2026, 3, 18, 16)  # type: ignore[union-attr]


def test_first_public_staff_reply_meets_the_first_response() -> None:
    story = Story(utc(2026, 3, 16, 7))
    story.reply(utc(2026, 3, 16, 7, 20), by_staff=False, first=False)  # the requester: no response
    story.reply(utc(2026, 3, 16, 7, 25))
    state, facts = run(story.events)
    assert kinds(facts) == ["started", "started", "met"]
    assert facts[-1].elapsed_seconds == 25 * 60 and facts[-1].status == "met"
    assert state.timer("first_response").status == "met"  # type: ignore[union-attr]


def test_resolving_without_a_reply_also_answers_the_first_response() -> None:
    story = Story(utc(2026, 3, 16, 7))
    story.resolve(utc(2026, 3, 16, 7, 45))
    _, facts = run(story.events)
    assert kinds(facts) == ["started", "started", "warning:50", "warning:75", "met", "met"]


def test_pending_pauses_resolution_but_not_the_first_response() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.pend(monday_9am + 10 * M)
    _, facts = run(story.events)
    assert kinds(facts) == ["started", "started", "paused"]
    assert facts[-1].metric == "resolution" and facts[-1].deadline is None
    assert facts[-1].pending_reason == "awaiting_requester"  # type: ignore[attr-defined]


def test_late_resolution_reads_breached_then_missed_whenever_the_processor_woke() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.reply(monday_9am + 2 * H)  # 1 h late
    _, facts = run(story.events)
    assert kinds(facts, "first_response") == [
        "started", "warning:50", "warning:75", "warning:90", "breached", "missed",
    ]  # fmt: skip
    breached, missed = facts[-2:]
    assert breached.occurred_at == monday_9am + H and breached.elapsed_seconds == 3600
    assert missed.occurred_at == monday_9am + 2 * H and missed.elapsed_seconds == 7200
    assert missed.status == "breached"


@pytest.mark.parametrize(
    ("after", "outcome"),
    [
        (-timedelta(seconds=1), ["started", "warning:50", "warning:75", "warning:90", "met"]),
        (timedelta(0), ["started", "warning:50", "warning:75", "warning:90", "breached", "missed"]),
    ],
)  # fmt: skip
def test_the_deadline_instant_itself_is_too_late(after: timedelta, outcome: list[str]) -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.reply(monday_9am + H + after)
    _, facts = run(story.events)
    assert kinds(facts, "first_response") == outcome


def test_a_breach_announced_before_a_late_delivered_resolution_does_not_count() -> None:
    # The processor's tick for the deadline ran before the reply that preceded it arrived.
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    state, _ = run(story.events)
    state, alerts = due_alerts(state, monday_9am + H + M)
    assert kinds(alerts) == ["warning:50", "warning:75", "warning:90", "breached"]
    state, facts = run([story.reply(monday_9am + 59 * M)], state=state)
    assert kinds(facts) == ["met"]


def test_an_alert_born_incident_is_measured_from_the_alert_start() -> None:
    alert_start, intake = utc(2026, 3, 16, 8), utc(2026, 3, 16, 10)  # noticed 2 h later
    state, facts = run(Story(intake, priority="P1", opened_at=alert_start).events)
    assert [(f.metric, f.occurred_at) for f in facts[:2]] == [
        ("first_response", alert_start), ("resolution", alert_start),
    ]  # fmt: skip
    # Due at intake already: every alert of the response, each at its own instant, and 50 % of 4 h.
    assert kinds(facts[2:]) == ["warning:50", "warning:75", "warning:90", "breached", "warning:50"]
    assert [f.occurred_at - alert_start for f in facts[2:6]] == [
        timedelta(minutes=7.5), timedelta(minutes=11.25), timedelta(minutes=13.5), 15 * M,
    ]  # fmt: skip
    assert facts[6].occurred_at == intake
    assert view(state, "resolution", intake).elapsed == 2 * H
    assert state.timer("resolution").deadline == alert_start + 4 * H  # type: ignore[union-attr]


# --- pause, resume, breach while paused ------------------------------------------------------


def test_pause_and_resume_shift_the_deadline_by_the_paused_business_time() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.pend(monday_9am + H)
    story.resume(monday_9am + 3 * H)  # paused 2 business hours (with lunch: 10-12 CET = 2 h)
    state, facts = run(story.events)
    assert kinds(facts, "resolution") == ["started", "paused", "resumed"]
    resumed = facts[-1]
    assert resumed.elapsed_seconds == 3600 and resumed.reason == "left_pending"  # type: ignore[attr-defined]
    assert resumed.deadline == utc(2026, 3, 17, 10)  # 7 h left: Mon 13-17, Tue 08-11 CET
    assert view(state, "resolution", monday_9am + 3 * H).elapsed == H


def test_a_breach_falling_due_during_a_pause_does_not_fire() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.reply(monday_9am + 5 * M)
    story.pend(monday_9am + 7 * H)  # 6 of 8 business hours used (lunch)
    state, _ = run(story.events)
    assert next_wakeup(state) is None  # nothing can fall due while paused
    original_deadline = utc(2026, 3, 16, 16)
    state, alerts = due_alerts(state, original_deadline + 10 * H)
    assert alerts == []
    story.resume(utc(2026, 3, 19, 7))  # Thursday 08:00 CET
    state, facts = run(story.events[-1:], state=state)
    assert kinds(facts) == ["resumed"]
    assert facts[0].deadline == utc(2026, 3, 19, 9)  # the 2 h left
    assert next_wakeup(state) == utc(2026, 3, 19, 8, 12)  # 90 %: 75 % passed before the pause


def test_a_pending_reason_the_policy_does_not_pause_on_keeps_the_clock_running() -> None:
    strict = PolicyCatalog(
        sla=(sla("inc-p2", "P2", OFFICE, H, 8 * H, pause_on=frozenset({"awaiting_requester"})),)
    )
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.pend(monday_9am + H, reason="awaiting_change")
    _, facts = run(story.events, strict)
    assert "paused" not in kinds(facts)


def test_leaving_pending_by_reassignment_or_resolution_resumes_or_stops() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.pend(monday_9am + H)
    story.assign("network", monday_9am + 2 * H)
    story.pend(monday_9am + 3 * H)
    story.resolve(monday_9am + 4 * H)
    _, facts = run(story.events)
    assert kinds(facts, "resolution") == ["started", "paused", "resumed", "paused", "met"]
    # 09-10 CET running, 10-11 paused, 11-12 running, then paused until resolved at 14:00
    resolution_met = [f for f in facts if f.metric == "resolution"][-1]
    assert resolution_met.elapsed_seconds == 2 * 3600 and resolution_met.deadline is None


# --- reprioritization ------------------------------------------------------------------------


def test_a_higher_priority_mid_flight_keeps_the_elapsed_time_and_moves_the_deadline() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am, priority="P3")
    story.reply(monday_9am + 5 * M)
    story.reprioritize("P1", monday_9am + 2 * H)  # 2 business hours used of P3's 24
    state, facts = run(story.events)
    retargeted, warning = facts[-2:]
    assert kinds(facts[-2:]) == ["retargeted", "warning:50"]  # 2 h is half of P1's 4 h
    assert warning.occurred_at == monday_9am + 2 * H
    assert (retargeted.policy_id, retargeted.target_seconds) == ("inc-p1", 4 * 3600)
    assert retargeted.previous_policy_id == "inc-p3"  # type: ignore[attr-defined]
    assert retargeted.previous_target_seconds == 24 * 3600  # type: ignore[attr-defined]
    assert retargeted.elapsed_seconds == 2 * 3600
    assert retargeted.deadline == monday_9am + 4 * H  # 2 h left, now on the 24x7 calendar
    assert state.timer("first_response").status == "met"  # type: ignore[union-attr]


def test_a_priority_raised_after_the_new_target_is_used_up_breaches_at_once() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am, priority="P3")
    story.reply(monday_9am + 5 * M)
    raised_at = monday_9am + 6 * H  # 5 business hours (lunch) > P1's 4 h
    story.reprioritize("P1", raised_at)
    _, facts = run(story.events)
    # Every level P1's target has already reached falls due at once, at the retarget.
    assert kinds(facts[-5:]) == ["retargeted", "warning:50", "warning:75", "warning:90", "breached"]
    assert {f.occurred_at for f in facts[-4:]} == {raised_at}
    assert facts[-1].occurred_at == raised_at == facts[-1].deadline


def test_a_lower_priority_does_not_undo_a_breach() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am, priority="P1")
    story.reply(monday_9am + 5 * M)
    story.note(monday_9am + 5 * H)  # the processor learns of the breach (4 h, 24x7)
    story.reprioritize("P3", monday_9am + 6 * H)
    story.resolve(monday_9am + 7 * H)
    _, facts = run(story.events)
    assert kinds(facts, "resolution") == [
        "started", "warning:50", "warning:75", "warning:90", "breached", "retargeted", "missed",
    ]  # fmt: skip
    missed = facts[-1]
    assert missed.target_seconds == 24 * 3600 and missed.deadline == monday_9am + 4 * H


def test_a_more_specific_policy_applies_when_the_service_changes() -> None:
    catalog = PolicyCatalog(
        sla=(*CATALOG.sla, sla("mail-p2", "P2", ALWAYS, 30 * M, 2 * H, service="mail"))
    )
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.change_service("mail", monday_9am + 10 * M)
    _, facts = run(story.events, catalog)
    assert kinds(facts[-2:]) == ["retargeted", "retargeted"]
    assert {f.policy_id for f in facts[-2:]} == {"mail-p2"}
    assert {f.reason for f in facts[-2:]} == {"service_changed"}  # type: ignore[attr-defined]


def test_a_priority_without_a_policy_cancels_its_timers() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.reprioritize("P5", monday_9am + H)
    state, facts = run(story.events)
    assert kinds(facts[-2:]) == ["cancelled", "cancelled"]
    assert {f.reason for f in facts[-2:]} == {"no_policy"}  # type: ignore[attr-defined]
    assert next_wakeup(state) is None


# --- resolution, reopen, close, cancel -------------------------------------------------------


def test_reopen_resumes_the_resolution_clock_with_its_elapsed_time() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.reply(monday_9am + 5 * M)
    story.resolve(monday_9am + 5 * H)  # 4 business hours (lunch), 50 % warned
    story.reopen(utc(2026, 3, 18, 8))  # Wednesday 09:00 CET
    state, facts = run(story.events)
    assert kinds(facts, "resolution") == ["started", "warning:50", "met", "resumed"]
    resumed = facts[-1]
    assert resumed.reason == "reopened" and resumed.elapsed_seconds == 4 * 3600  # type: ignore[attr-defined]
    assert resumed.deadline == utc(2026, 3, 18, 13)  # 4 h left: 09-12 and 13-14 CET
    assert next_wakeup(state) == utc(2026, 3, 18, 10)  # 75 %, not the 50 % again
    assert state.timer("first_response").status == "met"  # type: ignore[union-attr]


def test_close_and_cancel_cancel_what_still_runs() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    resolved = Story(monday_9am)
    resolved.resolve(monday_9am + H)
    resolved.close(monday_9am + 2 * H)
    _, facts = run(resolved.events)
    assert "cancelled" not in kinds(facts)  # resolution stopped them: nothing left to cancel

    cancelled = Story(monday_9am)
    cancelled.assign("network", monday_9am + 10 * M)
    cancelled.cancel(monday_9am + H)
    state, facts = run(cancelled.events)
    assert kinds(facts[-3:]) == ["cancelled"] * 3
    assert {f.reason for f in facts[-3:]} == {"cancelled"}  # type: ignore[attr-defined]
    assert {t.status for t in state.timers} == {"cancelled"}
    assert next_wakeup(state) is None


# --- OLAs ------------------------------------------------------------------------------------


def test_ola_follows_the_assignment_group_and_adds_up_when_the_ticket_comes_back() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.assign("network", monday_9am)
    story.assign("database", monday_9am + 40 * M)
    story.assign("network", monday_9am + 2 * H)
    story.pend(monday_9am + 2 * H + 30 * M)
    state, facts = run(story.events)
    # 40 + 30 minutes with the network group: its 50 % (1 h of 2 h) falls due on the way back
    assert kinds(facts, "ola:network") == ["started", "met", "resumed", "warning:50", "paused"]
    assert kinds(facts, "ola:database") == ["started", "met"]
    assert view(state, "ola:network", monday_9am + 5 * H).elapsed == 70 * M
    assert [
        f.reason for f in facts if f.metric == "ola:network" and f.event_type.endswith("resumed.v1")
    ] == ["reassigned"]  # type: ignore[attr-defined]


def test_an_assignee_change_within_the_group_changes_nothing() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.assign("network", monday_9am)
    story.assign("network", monday_9am + 10 * M)
    _, facts = run(story.events)
    assert kinds(facts) == ["started", "started", "started"]


def test_a_group_specific_sla_policy_applies_on_assignment() -> None:
    catalog = PolicyCatalog(
        sla=(*CATALOG.sla, sla("noc-p2", "P2", ALWAYS, H, 4 * H, group="noc")), ola=CATALOG.ola
    )
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.assign("noc", monday_9am + 10 * M)
    _, facts = run(story.events, catalog)
    assert kinds(facts[-2:]) == ["retargeted", "retargeted"]  # no OLA for the noc group
    assert facts[-1].reason == "reassigned"  # type: ignore[attr-defined]


# --- redelivery, replay, records -------------------------------------------------------------


def test_a_redelivered_event_changes_nothing() -> None:
    story = Story(utc(2026, 3, 16, 8))
    story.pend(utc(2026, 3, 16, 9))
    state, _ = run(story.events)
    again, facts = run(story.events, state=state)
    assert (again, facts) == (state, [])


def test_events_of_a_ticket_whose_creation_was_not_seen_are_skipped() -> None:
    story = Story(utc(2026, 3, 16, 8))
    state, facts = run([*story.events[1:], story.pend(utc(2026, 3, 16, 9))])
    assert facts == [] and state.ticket is None and state.applied_sequence == 2


def test_replay_gives_the_state_at_any_instant() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.pend(monday_9am + H)
    story.resume(monday_9am + 3 * H)
    story.resolve(monday_9am + 6 * H)
    halfway = replay(story.events, until=monday_9am + 2 * H, catalog=CATALOG)
    assert halfway.timer("resolution").status == "paused"  # type: ignore[union-attr]
    assert halfway.timer("first_response").breached_at == monday_9am + H  # type: ignore[union-attr]
    expected, _ = run(story.events[:2])
    expected, _ = due_alerts(expected, monday_9am + 2 * H)
    assert halfway == expected
    end = replay(story.events, until=utc(2026, 12, 31), catalog=CATALOG)
    assert end.timer("resolution").status == "met"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="no events"):
        replay([], until=monday_9am, catalog=CATALOG)


def test_apply_record_validates_the_payload_and_ignores_other_aggregates() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    created = Story(monday_9am).events[0]
    data = created.event.model_dump(mode="json")
    state, facts = apply_record(
        new_state("inc-1"), "itsm.incident.created.v1", data, at=monday_9am, catalog=CATALOG, sequence=1
    )  # fmt: skip
    assert kinds(facts) == ["started", "started"]
    other = ChangeSubmitted(change_id="c1", actor="a", status="assessment").model_dump(mode="json")
    assert apply_record(
        state, "itsm.change.submitted.v1", other, at=monday_9am, catalog=CATALOG
    ) == (state, [])


def test_the_state_counts_every_fact_for_the_processor_to_number_them() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am)
    story.reply(monday_9am + 2 * H)
    state, facts = run(story.events)
    state, alerts = due_alerts(state, utc(2026, 3, 20))
    assert kinds(facts) == [
        "started", "started", "warning:50", "warning:75", "warning:90", "breached", "missed",
    ]  # fmt: skip
    assert kinds(alerts) == ["warning:50", "warning:75", "warning:90", "breached"]
    assert state.version == len(facts) + len(alerts) == 11


def test_an_event_from_another_ticket_is_refused() -> None:
    state, _ = run(Story(utc(2026, 3, 16, 8)).events)
    other = Story(utc(2026, 3, 16, 8), incident_id="inc-2").events[0]
    with pytest.raises(ValueError, match="inc-2"):
        apply(state, other.event, at=other.at, catalog=CATALOG)


# --- the timer table and the contracts -------------------------------------------------------

STATUSES = ["running", "paused", "met", "breached", "cancelled"]
ACTIONS = ["pause", "resume", "meet", "miss", "cancel", "reopen"]
EXPECTED = {
    "running": {"pause": "paused", "meet": "met", "miss": "breached", "cancel": "cancelled"},
    "paused": {"resume": "running", "meet": "met", "miss": "breached", "cancel": "cancelled"},
    "met": {"reopen": "running"},
    "breached": {"reopen": "running"},
    "cancelled": {},
}


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", ACTIONS)
def test_timer_transition_table(status: str, action: str) -> None:
    target = CATALOG.sla[1].target("resolution")
    assert target is not None
    timer = start("resolution", target, utc(2026, 3, 16, 8))
    moved = step(replace(timer, status=status), action, utc(2026, 3, 16, 9))  # type: ignore[arg-type]
    expected = EXPECTED[status].get(action)
    assert (moved.status if moved else None) == expected
    assert TRANSITIONS.get((status, action)) == expected  # type: ignore[call-overload]


def test_a_transition_dated_before_the_last_change_takes_no_time_back() -> None:
    target = CATALOG.sla[0].target("resolution")  # 24x7
    assert target is not None
    monday_9am = utc(2026, 3, 16, 8)
    paused = step(start("resolution", target, monday_9am), "pause", monday_9am + H)
    assert paused is not None
    resumed = step(paused, "resume", monday_9am + 30 * M)  # a clock that stepped back
    assert resumed is not None
    assert (resumed.since, resumed.elapsed) == (monday_9am + H, H)
    assert view(SlaState("t", timers=(resumed,)), "resolution", monday_9am + 2 * H).elapsed == 2 * H


def test_every_sla_fact_is_registered_on_the_sla_topic_and_matches_its_schema() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    story = Story(monday_9am, priority="P3")
    story.assign("network", monday_9am)
    story.reply(monday_9am + 4 * M)
    story.pend(monday_9am + H)
    story.resume(monday_9am + 2 * H)
    story.reprioritize("P1", monday_9am + 3 * H)
    story.resolve(monday_9am + 9 * H)
    story.reopen(monday_9am + 10 * H)
    story.cancel(monday_9am + 11 * H)
    _, facts = run(story.events)
    schemas = json_schemas()
    names = {f.event_type for f in facts}
    assert names == {f"itsm.sla.{n}.v1" for n in (
        "started", "paused", "resumed", "retargeted", "warning", "breached", "met", "missed", "cancelled",
    )}  # fmt: skip
    for f in facts:
        assert f.topic == Topic.SLA and f.aggregate == "sla"
        assert contract_for(f.event_type) is type(f)
        jsonschema.validate(f.model_dump(mode="json"), schemas[f.event_type])
        assert type(f).model_validate(f.model_dump(mode="json")) == f


def test_the_metric_field_is_constrained() -> None:
    monday_9am = utc(2026, 3, 16, 8)
    _, facts = run(Story(monday_9am).events)
    with pytest.raises(ValueError, match="metric"):
        type(facts[0]).model_validate({**facts[0].model_dump(), "metric": "mttr"})
