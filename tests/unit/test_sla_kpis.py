"""Streaming KPIs, pure: what each event contributes, how a record's writes are planned (event
time, grace, lateness, backlog gauges), the partial documents and the summary."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.sla.domain.kpi_partials import (
    Dims,
    DurationStat,
    KpiFigures,
    KpiPartial,
    parse_partial_key,
    summarize,
    window_start,
)
from services.sla.domain.kpis import (
    KpiContribution,
    SourceClock,
    TicketKpiView,
    apply_update,
    change_contributions,
    contributions,
    merge_plans,
    plan,
)
from shared.contracts.changes import ChangeCompleted, ChangeStarted
from shared.contracts.incidents import (
    FieldChange,
    IncidentAssigned,
    IncidentCancelled,
    IncidentClosed,
    IncidentCreated,
    IncidentRated,
    IncidentReopened,
    IncidentReplied,
    IncidentReprioritized,
    IncidentResolved,
    IncidentUpdated,
    IncidentWorkNoteAdded,
)
from shared.contracts.sla import SlaBreached, SlaMet, SlaMissed
from shared.contracts.sla_kpis import KpiUpdated

T0 = datetime(2026, 3, 2, 9, 10, tzinfo=UTC)
M = timedelta(minutes=1)
OPEN_VIEW = TicketKpiView(Dims("L1-desk", "P2", "mail"), T0)
WHERE = Dims("L1-desk", "P2", "mail")


def base(status: str = "in_progress") -> dict[str, Any]:
    return {"incident_id": "INC-1", "actor": "ann", "status": status}


def figures(**counts: Any) -> KpiFigures:
    return KpiFigures(**counts)


CASES: list[tuple[str, TicketKpiView, Any, list[KpiContribution], TicketKpiView]] = [
    (
        "staff's first reply: first response time",
        OPEN_VIEW,
        IncidentReplied(**base(), body="on it", by_staff=True, first_response=True),
        [KpiContribution(WHERE, T0 + 5 * M, figures(first_response=DurationStat.of(300)))],
        replace(OPEN_VIEW, responded=True),
    ),
    (
        "a requester's reply counts for nothing",
        OPEN_VIEW,
        IncidentReplied(**base(), body="any news?", by_staff=False, first_response=False),
        [],
        OPEN_VIEW,
    ),
    (
        "first resolution: resolved, MTTR, FCR, leaves the backlog (and answers first)",
        OPEN_VIEW,
        IncidentResolved(
            **base("resolved"),
            resolution_code="fixed",
            resolution_notes="ok",
            resolved_at=T0 + 5 * M,
            first_contact_resolution=True,
            group="L1-desk",
            tier="L1",
        ),
        [
            KpiContribution(
                WHERE,
                T0 + 5 * M,
                figures(
                    resolved=1,
                    first_response=DurationStat.of(300),
                    resolution=DurationStat.of(300),
                    fcr_eligible=1,
                    fcr_count=1,
                ),
                open_delta=-1,
            )
        ],
        replace(OPEN_VIEW, open=False, responded=True, resolutions=1),
    ),
    (
        "a second resolution counts as resolved only",
        replace(OPEN_VIEW, responded=True, resolutions=1),
        IncidentResolved(
            **base("resolved"),
            resolution_code="fixed",
            resolution_notes="ok",
            resolved_at=T0 + 5 * M,
            first_contact_resolution=False,
            group="L1-desk",
            tier="L1",
        ),
        [KpiContribution(WHERE, T0 + 5 * M, figures(resolved=1), open_delta=-1)],
        replace(OPEN_VIEW, open=False, responded=True, resolutions=2),
    ),
    (
        "reopened: back in the backlog",
        replace(OPEN_VIEW, open=False, resolutions=1),
        IncidentReopened(**base("in_progress"), reason="still broken", reopen_count=1),
        [KpiContribution(WHERE, T0 + 5 * M, figures(reopened=1), open_delta=1)],
        replace(OPEN_VIEW, open=True, resolutions=1),
    ),
    (
        "rated: CSAT",
        replace(OPEN_VIEW, open=False),
        IncidentRated(**base("closed"), score=4),
        [KpiContribution(WHERE, T0 + 5 * M, figures(csat_count=1, csat_sum=4))],
        replace(OPEN_VIEW, open=False),
    ),
    (
        "reassigned: the backlog moves to the new team",
        OPEN_VIEW,
        IncidentAssigned(
            **base("assigned"),
            group="L2-mail",
            tier="L2",
            assignee=None,
            previous_group="L1-desk",
            previous_assignee=None,
            reassignment_count=1,
        ),
        [
            KpiContribution(WHERE, T0 + 5 * M, open_delta=-1),
            KpiContribution(Dims("L2-mail", "P2", "mail"), T0 + 5 * M, open_delta=1),
        ],
        replace(OPEN_VIEW, dims=Dims("L2-mail", "P2", "mail")),
    ),
    (
        "reprioritized: the backlog moves to the new priority",
        OPEN_VIEW,
        IncidentReprioritized(
            **base(), impact=1, urgency=1, priority="P1", previous_priority="P2", reason="CEO"
        ),
        [
            KpiContribution(WHERE, T0 + 5 * M, open_delta=-1),
            KpiContribution(Dims("L1-desk", "P1", "mail"), T0 + 5 * M, open_delta=1),
        ],
        replace(OPEN_VIEW, dims=Dims("L1-desk", "P1", "mail")),
    ),
    (
        "service changed on a resolved ticket: no backlog to move",
        replace(OPEN_VIEW, open=False),
        IncidentUpdated(
            **base("resolved"), changes={"service": FieldChange(before="mail", after="vpn")}
        ),
        [],
        replace(OPEN_VIEW, open=False, dims=Dims("L1-desk", "P2", "vpn")),
    ),
    (
        "cancelled while open: leaves the backlog",
        OPEN_VIEW,
        IncidentCancelled(**base("cancelled"), reason="duplicate"),
        [KpiContribution(WHERE, T0 + 5 * M, open_delta=-1)],
        replace(OPEN_VIEW, open=False),
    ),
    (
        "closed after resolution: nothing more",
        replace(OPEN_VIEW, open=False),
        IncidentClosed(**base("closed"), closure="confirmed"),
        [],
        replace(OPEN_VIEW, open=False),
    ),
    (
        "work notes count for nothing",
        OPEN_VIEW,
        IncidentWorkNoteAdded(**base(), body="looking"),
        [],
        OPEN_VIEW,
    ),
]


@pytest.mark.parametrize(
    ("view", "event", "expected", "after"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_what_an_incident_event_contributes(
    view: TicketKpiView, event: Any, expected: list[KpiContribution], after: TicketKpiView
) -> None:
    new_view, items = contributions(view, event, T0 + 5 * M)
    assert items == expected
    assert new_view == after


def test_creation_opens_a_ticket_in_its_priority_and_service_without_a_team() -> None:
    event = IncidentCreated(
        **base("new"),
        number="INC1",
        title="Mail down",
        requester="rita",
        impact=2,
        urgency=2,
        priority="P3",
        service="mail",
        opened_at=T0 - 10 * M,
    )
    view, items = contributions(None, event, T0)
    assert view == TicketKpiView(Dims("-", "P3", "mail"), T0 - 10 * M)  # an alert's start
    assert items == [KpiContribution(Dims("-", "P3", "mail"), T0, figures(opened=1), open_delta=1)]


def test_an_event_of_a_ticket_never_created_is_not_attributed() -> None:
    assert contributions(None, IncidentRated(**base(), score=5), T0) == (None, [])


def sla_fact(cls: Any, metric: str, at: datetime, priority: str = "P1") -> Any:
    return cls(
        ticket_id="INC-1",
        ticket_type="incident",
        metric=metric,
        priority=priority,
        policy_id="p",
        policy_version=1,
        policy_name="P1",
        calendar="24x7",
        status="met",
        target_seconds=900,
        elapsed_seconds=60,
        deadline=None,
        occurred_at=at,
    )


def test_sla_outcomes_count_at_their_own_time_in_the_priority_they_had() -> None:
    facts = [
        sla_fact(SlaBreached, "resolution", T0 - 30 * M),
        sla_fact(SlaMet, "first_response", T0),
        sla_fact(SlaMissed, "resolution", T0),
        sla_fact(SlaMet, "ola:L1-desk", T0),  # an OLA is not the requester's SLA
    ]
    _, items = contributions(OPEN_VIEW, IncidentWorkNoteAdded(**base(), body="x"), T0, facts)
    p1 = Dims("L1-desk", "P1", "mail")
    assert items == [
        KpiContribution(p1, T0 - 30 * M, figures(breaches=1)),
        KpiContribution(p1, T0, figures(sla_met=1)),
        KpiContribution(p1, T0, figures(sla_missed=1)),
    ]


@pytest.mark.parametrize(
    ("outcome", "successful"),
    [("successful", 1), ("successful_with_issues", 1), ("failed", 0), ("rolled_back", 0)],
)
def test_a_completed_change_counts_for_the_success_rate(outcome: Any, successful: int) -> None:
    event = ChangeCompleted(
        change_id="CHG-1",
        actor="bob",
        status="completed",
        outcome=outcome,
        actual_start=T0,
        actual_end=T0 + M,
        review_required=False,
        configuration_items=[],
        services=["mail", "vpn"],
    )
    assert change_contributions(event, T0 + M) == [
        KpiContribution(
            Dims("-", "-", "mail"),
            T0 + M,
            figures(changes_completed=1, changes_successful=successful),
        )
    ]
    other = ChangeStarted(change_id="CHG-1", actor="bob", status="implementing", actual_start=T0)
    assert change_contributions(other, T0) == []


# -- planning -----------------------------------------------------------------------------------


def no_gauge(dims: Dims) -> int:
    return 0


def test_a_record_lands_in_its_hour_and_day_buckets_and_moves_the_clock() -> None:
    item = KpiContribution(WHERE, T0, figures(opened=1), open_delta=1)
    planned = plan("t", 3, 41, [item], clock=SourceClock(), gauge=lambda d: 6)
    assert planned.clock == T0 and planned.gauges == ((WHERE, 7),)
    assert {
        (u.granularity, u.window_start, u.figures.opened, u.backlog) for u in planned.partials
    } == {
        ("hour", datetime(2026, 3, 2, 9, tzinfo=UTC), 1, 7),
        ("day", datetime(2026, 3, 2, tzinfo=UTC), 1, 7),
    }


def test_late_contributions_count_as_late_in_the_current_window_within_grace_they_apply() -> None:
    clock = SourceClock(datetime(2026, 3, 2, 10, 9, tzinfo=UTC), watermark=40)
    in_grace = KpiContribution(WHERE, T0, figures(resolved=1))  # the 9:00 hour + 10 min grace
    planned = plan("t", 0, 41, [in_grace], clock=clock, gauge=no_gauge)
    assert {(u.granularity, u.figures) for u in planned.partials} == {
        ("hour", figures(resolved=1)),
        ("day", figures(resolved=1)),
    }

    later = replace(clock, event_time=datetime(2026, 3, 2, 10, 10, tzinfo=UTC))
    planned = plan("t", 0, 41, [in_grace], clock=later, gauge=no_gauge)
    by_granularity = {u.granularity: u for u in planned.partials}
    assert by_granularity["hour"].window_start == datetime(2026, 3, 2, 10, tzinfo=UTC)
    assert by_granularity["hour"].figures == figures(late_events=1)
    assert by_granularity["day"].figures == figures(resolved=1)  # the day is still open
    assert planned.clock == later.event_time  # a late event does not move the clock back


def test_applying_is_guarded_by_the_source_offset() -> None:
    planned = plan(
        "t",
        0,
        7,
        [KpiContribution(WHERE, T0, figures(opened=1))],
        clock=SourceClock(),
        gauge=no_gauge,
    )
    update = planned.partials[0]
    once = apply_update(None, update, "t", 0, 7)
    assert once is not None and once.watermark == 7 and once.figures.opened == 1
    assert apply_update(once, update, "t", 0, 7) is None  # redelivered
    twice = apply_update(once, update, "t", 0, 8)
    assert twice is not None and twice.figures.opened == 2


def test_merging_plans_sums_their_partials_at_the_last_offset() -> None:
    plans = [
        plan("t", 0, offset, [KpiContribution(WHERE, T0, figures(breaches=1))],
             clock=SourceClock(), gauge=no_gauge)
        for offset in (5, 6, 9)
    ]  # fmt: skip
    merged = merge_plans(plans)
    assert merged.offset == 9 and merged.clock == T0
    assert {(u.granularity, u.figures.breaches) for u in merged.partials} == {
        ("hour", 3),
        ("day", 3),
    }


@pytest.mark.parametrize(
    ("offsets_and_sources", "error"),
    [
        ([], "no plans to merge"),
        ([(5, "t"), (6, "u")], "different sources"),
        ([(6, "t"), (6, "t")], "increasing offsets"),
        ([(7, "t"), (6, "t")], "increasing offsets"),
    ],
)
def test_merging_refuses_plans_it_cannot_merge(
    offsets_and_sources: list[tuple[int, str]], error: str
) -> None:
    plans = [
        plan(topic, 0, offset, [], clock=SourceClock(), gauge=no_gauge)
        for offset, topic in offsets_and_sources
    ]
    with pytest.raises(ValueError, match=error):
        merge_plans(plans)


# -- partials and summary -----------------------------------------------------------------------


def partial(partition: int, dims: Dims = WHERE, hour: int = 9, **counts: Any) -> KpiPartial:
    backlog = counts.pop("backlog", None)
    return KpiPartial(
        "itsm.incidents.events.v1",
        partition,
        "hour",
        datetime(2026, 3, 2, hour, tzinfo=UTC),
        dims,
        KpiFigures(**counts),
        backlog=backlog,
        watermark=12,
    )


def test_a_partial_round_trips_through_its_document_and_the_contract() -> None:
    one = partial(
        2,
        Dims("L2|mail", "P1", "-"),
        opened=3,
        csat_count=1,
        csat_sum=5,
        backlog=4,
        resolution=DurationStat.of(120) + DurationStat.of(0.0001),
    )
    doc = one.to_document()
    assert KpiPartial.from_document(doc) == one
    event = KpiUpdated.model_validate(doc)
    assert KpiPartial.from_document(event.model_dump(mode="json")) == one
    assert parse_partial_key(one.key)[4] == Dims("L2|mail", "P1", "-")  # '|' is escaped
    assert (one.sequence, replace(one, final=True).sequence) == (26, 27)


def test_the_summary_merges_figures_and_takes_each_sources_latest_backlog() -> None:
    summary = summarize(
        [
            partial(
                0,
                opened=2,
                resolved=1,
                fcr_eligible=1,
                fcr_count=1,
                sla_met=3,
                sla_missed=1,
                resolution=DurationStat.of(60),
                backlog=5,
            ),
            partial(0, hour=10, opened=1, backlog=4, csat_count=2, csat_sum=9),
            partial(
                1,
                opened=1,
                resolved=1,
                fcr_eligible=1,
                resolution=DurationStat.of(600),
                backlog=2,
                changes_completed=4,
                changes_successful=3,
                late_events=1,
            ),
        ]
    )
    assert (summary.opened, summary.resolved, summary.backlog) == (4, 2, 4 + 2)
    assert (summary.mttr_mean, summary.resolutions) == (330.0, 2)
    assert summary.mttr_p50 == pytest.approx(60, rel=0.01)
    assert summary.mttr_p90 == pytest.approx(60, rel=0.01)  # the lower quantile of two
    assert (summary.fcr_percent, summary.sla_compliance_percent) == (50.0, 75.0)
    assert (summary.csat_average, summary.csat_count) == (4.5, 2)
    assert (summary.change_success_percent, summary.late_events) == (75.0, 1)
    assert summary.first_response_mean is None and summary.first_response_p90 is None
    assert summary.to_dict()["windows"] == [
        "2026-03-02T09:00:00+00:00",
        "2026-03-02T10:00:00+00:00",
    ]


def test_hour_and_day_partials_are_not_summarized_together() -> None:
    day = replace(partial(0), granularity="day", window_start=datetime(2026, 3, 2, tzinfo=UTC))
    with pytest.raises(ValueError, match="one of them"):
        summarize([partial(0), day])


def test_windows_are_utc_hours_and_days() -> None:
    at = datetime(2026, 3, 2, 1, 30, tzinfo=UTC).astimezone()
    assert window_start("hour", at) == datetime(2026, 3, 2, 1, tzinfo=UTC)
    assert window_start("day", at) == datetime(2026, 3, 2, tzinfo=UTC)
