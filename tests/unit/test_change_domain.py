"""Change domain rules, table-driven: transitions, approval policy, risk, scheduling across
time zones and DST."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from services.changes.domain import actions
from services.changes.domain import approvals as policy
from services.changes.domain.lifecycle import InvalidChangeTransition, next_status
from services.changes.domain.model import Change, Plan, RiskAnswers, Window
from services.changes.domain.risk import assess_risk
from services.changes.domain.scheduling import (
    FreezeWindow,
    MaintenanceWindow,
    check_schedule,
    conflicting,
    within_maintenance,
)
from shared.errors import Conflict, Forbidden, Invalid

NOW = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)
FULL_PLAN = Plan("do it", "undo it", "check it", backout_tested=True)

STATUSES = [
    "draft", "assessment", "awaiting_approval", "scheduled", "implementing", "completed",
    "review", "closed", "rejected", "cancelled",
]  # fmt: skip
ACTIONS = [
    "edit", "submit", "assess", "approve", "reject", "start", "complete", "review", "close",
    "cancel", "decline",
]  # fmt: skip
EXPECTED = {
    "draft": {"edit": "draft", "submit": "assessment", "cancel": "cancelled", "decline": "rejected"},
    "assessment": {"assess": "awaiting_approval", "cancel": "cancelled", "decline": "rejected"},
    "awaiting_approval": {
        "approve": "scheduled", "reject": "draft", "cancel": "cancelled", "decline": "rejected",
    },
    "scheduled": {"start": "implementing", "cancel": "cancelled"},
    "implementing": {"complete": "completed"},
    "completed": {"review": "review", "close": "closed"},
    "review": {"close": "closed"},
    "closed": {}, "rejected": {}, "cancelled": {},
}  # fmt: skip


@pytest.mark.parametrize("change_type", ["normal", "emergency", "standard"])
@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", ACTIONS)
def test_transition_table(change_type: str, status: str, action: str) -> None:
    expected = EXPECTED[status].get(action)
    if (change_type, status, action) == ("standard", "draft", "submit"):
        expected = "scheduled"  # pre-approved
    if expected is None:
        with pytest.raises(InvalidChangeTransition) as refused:
            next_status(change_type, status, action)  # type: ignore[arg-type]
        assert status in str(refused.value)
    else:
        assert next_status(change_type, status, action) == expected  # type: ignore[arg-type]


def change(**overrides: object) -> Change:
    base = Change(
        id="c1", number="CHG0000001", title="Upgrade router", description="",
        change_type="normal", status="draft", requester="rita", created_at=NOW,
        updated_at=NOW, version=1, implementer="ivan", services=("network",),
        configuration_items=("rtr-1",), plan=FULL_PLAN,
        window=Window(NOW + timedelta(days=1), NOW + timedelta(days=1, hours=2)),
    )  # fmt: skip
    return replace(base, **overrides)


# --- approval policy ---------------------------------------------------------------------

GROUPS = {"cab": ("carla", "cem", "cora"), "ecab": ("ed", "eve")}


@pytest.mark.parametrize(
    ("change_type", "level", "expected"),
    [
        ("standard", "high", []),
        ("normal", "low", [("change-managers", 1)]),
        ("normal", "medium", [("change-managers", 1), ("cab", 1)]),
        ("normal", "high", [("change-managers", 1), ("cab", 3)]),  # every CAB member
        ("emergency", "low", [("ecab", 1)]),
        ("emergency", "high", [("change-managers", 1), ("ecab", 1)]),
    ],
)
def test_approval_policy(change_type: str, level: str, expected: list[tuple[str, int]]) -> None:
    needed = policy.requirements(change_type, level, GROUPS)  # type: ignore[arg-type]
    assert [(r.group, r.quorum) for r in needed] == expected


def awaiting(level: str = "high", change_type: str = "normal") -> Change:
    return change(
        status="awaiting_approval",
        change_type=change_type,
        requirements=policy.requirements(change_type, level, GROUPS),  # type: ignore[arg-type]
    )


def approve(c: Change, user: str, *, manager: bool = False) -> Change:
    decided, _ = actions.decide(
        c, "approve", user=user, comment="ok", is_change_manager=manager, now=NOW, others=[],
        freezes=[],
    )  # fmt: skip
    return decided


def test_high_risk_needs_a_change_manager_and_every_cab_member() -> None:
    c = awaiting("high")
    for user in ("mona", "carla", "cem"):
        c = approve(c, user, manager=user == "mona")
        assert c.status == "awaiting_approval"
    c = approve(c, "cora")
    assert c.status == "scheduled" and c.version == 6


def test_an_approver_counts_once_and_the_requester_cannot_approve() -> None:
    c = approve(awaiting("medium"), "carla")
    with pytest.raises(Forbidden, match="no open approval"):
        approve(c, "carla")
    with pytest.raises(Forbidden, match="requester"):
        approve(c, "rita", manager=True)
    with pytest.raises(Forbidden):
        approve(c, "stranger")


def test_a_rejection_returns_the_change_to_draft() -> None:
    rejected, events = actions.decide(
        awaiting("low"), "reject", user="mona", comment="no backout", is_change_manager=True,
        now=NOW, others=[], freezes=[],
    )  # fmt: skip
    assert rejected.status == "draft" and rejected.requirements == ()
    assert [e.event_type.split(".")[2] for e in events] == ["approval_recorded", "rejected"]


def test_a_delegate_approves_on_behalf_of_the_member() -> None:
    c, _ = actions.delegate(awaiting("medium"), approver="carla", to="dora", now=NOW)
    c = approve(c, "dora")
    assert c.approvals[-1].on_behalf_of == "carla" and c.approvals[-1].approver == "dora"
    c = approve(c, "mona", manager=True)
    assert c.status == "scheduled"
    with pytest.raises(Forbidden):
        actions.delegate(awaiting("medium"), approver="stranger", to="x", now=NOW)


# --- risk ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "inside", "level", "reason"),
    [
        ({}, True, "low", None),
        ({"plan": replace(FULL_PLAN, backout_tested=False)}, True, "low", "backout plan has not been tested"),
        ({}, False, "low", "outside a maintenance window"),
        ({"configuration_items": tuple(f"ci-{i}" for i in range(6))}, True, "low", "affects 6 items"),
        ({"answers": RiskAnswers(user_impact="high", complexity="high")}, True, "high", "high impact"),
        ({"answers": RiskAnswers(user_impact="medium", tested_in_staging=False)}, False, "medium", "not tested in staging"),
        ({"plan": replace(FULL_PLAN, backout_tested=False), "answers": RiskAnswers(similar_change_failed_before=True)}, False, "high", "failed before"),
    ],
)  # fmt: skip
def test_risk_rules_give_a_level_with_reasons(
    overrides: dict, inside: bool, level: str, reason: str | None
) -> None:
    risk = assess_risk(change(**overrides), within_maintenance=inside)
    assert risk.level == level
    if reason is None:
        assert risk.reasons == () and risk.score == 0
    else:
        assert any(reason in r for r in risk.reasons), risk.reasons


# --- scheduling ----------------------------------------------------------------------------


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def test_conflicts_are_approved_changes_on_a_shared_item_with_overlapping_windows() -> None:
    mine = change(window=Window(at(21, 10), at(21, 12)), configuration_items=("rtr-1", "sw-2"))
    others = [
        change(id="a", number="CHG1", status="scheduled", window=Window(at(21, 11), at(21, 13))),
        change(id="b", number="CHG2", status="scheduled", window=Window(at(21, 12), at(21, 13))),  # touches
        change(id="c", number="CHG3", status="draft", window=Window(at(21, 10), at(21, 12))),  # not approved
        change(id="d", number="CHG4", status="implementing", configuration_items=("sw-2",), window=Window(at(21, 9), at(21, 11))),
        change(id="e", number="CHG5", status="scheduled", configuration_items=("fw-9",), window=Window(at(21, 10), at(21, 12))),
    ]  # fmt: skip
    assert sorted(c.number for c in conflicting(mine, others)) == ["CHG1", "CHG4"]
    with pytest.raises(Conflict, match="CHG1, CHG4"):
        check_schedule(mine, others, [])


@pytest.mark.parametrize(
    ("change_type", "services", "blocked"),
    [
        ("normal", ("network",), True),
        ("emergency", ("network",), False),
        ("normal", ("mail",), False),
    ],
)
def test_freeze_windows_block_all_but_emergencies(
    change_type: str, services: tuple[str, ...], blocked: bool
) -> None:
    freezes = [
        FreezeWindow("quarter-end", Window(at(30, 0), at(31, 23)), ("network", "erp")),
        FreezeWindow("all-hands", Window(at(25, 0), at(25, 23))),
    ]
    c = change(change_type=change_type, services=services, window=Window(at(30, 10), at(30, 11)))
    if blocked:
        with pytest.raises(Conflict, match="quarter-end"):
            check_schedule(c, [], freezes)
    else:
        check_schedule(c, [], freezes)
    with pytest.raises(Conflict, match="all-hands"):
        check_schedule(change(window=Window(at(25, 1), at(25, 2))), [], freezes)


# Saturday 22:00 for 6 hours, Berlin time. 2026: DST starts Sun 29 March 02:00 (CET -> CEST),
# ends Sun 25 October 03:00 (CEST -> CET).
BERLIN = MaintenanceWindow("weekend", 5, time(22, 0), timedelta(hours=6), "Europe/Berlin")
NEW_YORK = MaintenanceWindow("nightly-sun", 6, time(1, 0), timedelta(hours=3), "America/New_York")


@pytest.mark.parametrize(
    ("window", "day", "start_utc", "end_utc"),
    [
        (BERLIN, datetime(2026, 3, 21).date(), at(21, 21), at(22, 3)),  # CET both ends
        (BERLIN, datetime(2026, 3, 28).date(), at(28, 21), at(29, 2)),  # spring forward: 5 real hours
        (BERLIN, datetime(2026, 4, 4).date(), datetime(2026, 4, 4, 20, tzinfo=UTC), datetime(2026, 4, 5, 2, tzinfo=UTC)),
        (BERLIN, datetime(2026, 10, 24).date(), datetime(2026, 10, 24, 20, tzinfo=UTC), datetime(2026, 10, 25, 3, tzinfo=UTC)),  # fall back: 7 h
        (NEW_YORK, datetime(2026, 3, 8).date(), datetime(2026, 3, 8, 6, tzinfo=UTC), datetime(2026, 3, 8, 8, tzinfo=UTC)),  # 02:00 skipped
        (NEW_YORK, datetime(2026, 11, 1).date(), datetime(2026, 11, 1, 5, tzinfo=UTC), datetime(2026, 11, 1, 9, tzinfo=UTC)),  # 01:00 twice
    ],
)  # fmt: skip
def test_maintenance_windows_follow_local_wall_clock_across_dst(
    window: MaintenanceWindow, day: object, start_utc: datetime, end_utc: datetime
) -> None:
    occurrence = window.occurrence_on(day)  # type: ignore[arg-type]
    assert (occurrence.start, occurrence.end) == (start_utc, end_utc)


def test_within_maintenance_uses_the_right_week_in_utc() -> None:
    # 21:30-22:30 UTC on 21 March is 22:30-23:30 CET: inside. On 4 April (CEST) it is
    # 23:30-00:30 local: also inside. 20:30 UTC on 21 March is 21:30 CET: outside.
    assert within_maintenance(Window(at(21, 21, 30), at(21, 22, 30)), ["network"], [BERLIN])
    april = datetime(2026, 4, 4, 21, 30, tzinfo=UTC)
    assert within_maintenance(Window(april, april + timedelta(hours=1)), [], [BERLIN])
    assert not within_maintenance(Window(at(21, 20, 30), at(21, 21, 30)), [], [BERLIN])
    occurrences = list(BERLIN.occurrences(Window(at(20, 0), datetime(2026, 4, 6, tzinfo=UTC))))
    assert [o.start.hour for o in occurrences] == [21, 21, 20]  # CET, CET, then CEST


# --- lifecycle details ---------------------------------------------------------------------


def test_submission_needs_a_window_and_complete_plans() -> None:
    with pytest.raises(Invalid, match="backout plan"):
        actions.submit(
            change(plan=Plan("x", "", "y")), actor="rita", now=NOW, others=[], freezes=[]
        )
    with pytest.raises(Invalid, match="window"):
        actions.submit(change(window=None), actor="rita", now=NOW, others=[], freezes=[])
    with pytest.raises(Invalid, match="end after it starts"):
        Window(at(21, 12), at(21, 10))


def test_a_standard_change_is_scheduled_on_submission() -> None:
    std = change(change_type="standard", template="patch-linux", plan=Plan())
    scheduled, events = actions.submit(std, actor="rita", now=NOW, others=[], freezes=[])
    assert scheduled.status == "scheduled"
    assert [e.event_type.split(".")[2] for e in events] == ["submitted", "approved"]


@pytest.mark.parametrize(
    ("change_type", "outcome", "review_required"),
    [
        ("normal", "successful", False),
        ("normal", "successful_with_issues", False),
        ("normal", "failed", True),
        ("normal", "rolled_back", True),
        ("emergency", "successful", True),
    ],
)
def test_review_is_required_for_failed_and_emergency_changes(
    change_type: str, outcome: str, review_required: bool
) -> None:
    running = change(change_type=change_type, status="implementing", actual_start=NOW)
    done, events = actions.complete(running, outcome, actor="ivan", now=NOW + timedelta(hours=1))  # type: ignore[arg-type]
    assert events[0].review_required is review_required
    if review_required:
        with pytest.raises(Conflict, match="review is required"):
            actions.close(done, actor="mona", now=NOW)
        reviewed, _ = actions.review(done, summary="s", lessons="l", actor="ivan", now=NOW)
        closed, _ = actions.close(reviewed, actor="mona", now=NOW)
    else:
        closed, _ = actions.close(done, actor="mona", now=NOW)
    assert closed.status == "closed"


def test_completion_cannot_end_before_it_started() -> None:
    running = change(status="implementing", actual_start=NOW)
    with pytest.raises(Invalid, match="end before"):
        actions.complete(
            running, "successful", actor="i", now=NOW, actual_end=NOW - timedelta(minutes=1)
        )


def test_incident_links_are_idempotent_and_named_beats_suggested() -> None:
    c, events = actions.link_incident(
        change(), incident_id="i1", incident_number="INC1", kind="suggested", now=NOW
    )
    assert c.suggested_incidents == ("i1",) and len(events) == 1
    again, events = actions.link_incident(
        c, incident_id="i1", incident_number="INC1", kind="suggested", now=NOW
    )
    assert again == c and events == []
    named, _ = actions.link_incident(
        c, incident_id="i1", incident_number="INC1", kind="named", now=NOW
    )
    assert named.caused_incidents == ("i1",) and named.suggested_incidents == ()
