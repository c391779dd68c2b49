"""The SLA read model on the in-memory store: materialising facts (redelivery, out-of-order
delivery, bad facts) and reading timers at an instant (time remaining, paused timers, at risk,
breached)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.sla import handlers
from services.sla.handlers import AtRisk, SlaReadModel, read_timer
from services.sla.store import AccessStore, KpiPartialStore, TimerFilter, TimerStore, timer_key
from shared.bus.port import PermanentEventError
from shared.contracts.envelope import Envelope
from shared.contracts.sla import (
    SlaBreached,
    SlaEvent,
    SlaMet,
    SlaMissed,
    SlaPaused,
    SlaStarted,
    SlaWarning,
)
from shared.errors import NotFound
from shared.store.memory import InMemoryDatabase

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)
H = timedelta(hours=1)
EXTRA: dict[type[SlaEvent], dict[str, Any]] = {
    SlaPaused: {"pending_reason": "awaiting_requester"},
    SlaWarning: {"threshold": 75},
}


def fact(
    cls: type[SlaEvent],
    sequence: int,
    *,
    ticket: str = "t-1",
    metric: str = "resolution",
    status: str = "running",
    elapsed: float = 0,
    target: float = 3600,
    deadline: datetime | None = T0 + H,
    at: datetime = T0,
    priority: str = "P2",
    ticket_type: str = "incident",
    subject: str | None = None,
    **extra: Any,
) -> Envelope:
    """An SLA fact as the processor publishes it."""
    data = cls(
        ticket_id=ticket,
        ticket_type=ticket_type,
        metric=metric,
        priority=priority,
        policy_id=f"default-{ticket_type}-{priority.lower()}",
        policy_version=1,
        policy_name=f"{priority} incidents",
        calendar="24x7",
        status=status,
        target_seconds=int(target),
        elapsed_seconds=int(elapsed),
        deadline=deadline,
        occurred_at=at,
        **{**EXTRA.get(cls, {}), **extra},
    )
    return Envelope(
        type=cls.event_type,
        source="/itsm/sla",
        subject=subject or ticket,
        sequence=sequence,
        data=data.model_dump(mode="json"),
        time=at,
    )


def read_model(database: InMemoryDatabase) -> SlaReadModel:
    return SlaReadModel(
        timers=TimerStore(database), kpis=KpiPartialStore(database), access=AccessStore(database)
    )


@pytest.fixture
def model() -> SlaReadModel:
    return read_model(InMemoryDatabase())


async def apply(model: SlaReadModel, *envelopes: Envelope) -> list[bool]:
    return [await handlers.on_sla_fact(model, e, now=T0) for e in envelopes]


async def stored(model: SlaReadModel, ticket: str = "t-1", metric: str = "resolution") -> dict:
    document = await model.timers.collection.find_one({"_id": timer_key(ticket, metric)})
    assert document is not None
    return document


async def test_a_started_fact_becomes_a_timer_document_and_reads_with_time_remaining(
    model: SlaReadModel,
) -> None:
    assert await apply(model, fact(SlaStarted, 1)) == [True]
    document = await stored(model)
    assert document["status"] == "running" and document["deadline"] == T0 + H
    assert document["last_sequence"] == 1 and document["breached"] is False

    reading = read_timer(document, T0 + 15 * M)
    assert reading.remaining_seconds == 45 * 60
    assert reading.elapsed_seconds == 15 * 60 and reading.percent_used == 25.0
    assert not reading.paused and not reading.breached


async def test_a_redelivered_fact_changes_nothing(model: SlaReadModel) -> None:
    started = fact(SlaStarted, 1)
    warned = fact(SlaWarning, 2, elapsed=2700, at=T0 + 45 * M)
    assert await apply(model, started, warned, warned, started) == [True, True, False, False]
    document = await stored(model)
    assert document["last_fact"] == "warning" and document["warning_threshold"] == 75
    assert document["event_id"] == warned.id and document["last_sequence"] == 2


async def test_a_late_older_fact_never_moves_the_timer_back(model: SlaReadModel) -> None:
    paused = fact(SlaPaused, 3, status="paused", elapsed=1200, deadline=None, at=T0 + 20 * M)
    late_start = fact(SlaStarted, 1)
    assert await apply(model, paused, late_start) == [True, False]
    document = await stored(model)
    assert document["status"] == "paused" and document["last_sequence"] == 3


async def test_facts_of_other_metrics_of_the_ticket_are_separate_timers(
    model: SlaReadModel,
) -> None:
    # One SLA state version numbers the facts of all the ticket's timers.
    await apply(
        model,
        fact(SlaStarted, 1, metric="first_response", target=1800, deadline=T0 + 30 * M),
        fact(SlaStarted, 2),
        fact(SlaMet, 3, metric="first_response", status="met", elapsed=600, target=1800,
             deadline=T0 + 30 * M, at=T0 + 10 * M),
    )  # fmt: skip
    readings = await handlers.ticket_sla(model, "t-1", now=T0 + 20 * M)
    by_metric = {r.metric: r for r in readings}
    assert by_metric["first_response"].status == "met"
    assert by_metric["first_response"].remaining_seconds == 1200  # the target left unused
    assert by_metric["resolution"].remaining_seconds == 40 * 60


async def test_a_paused_timer_reports_the_business_time_left_whatever_the_clock(
    model: SlaReadModel,
) -> None:
    await apply(
        model,
        fact(SlaStarted, 1),
        fact(SlaPaused, 2, status="paused", elapsed=1200, deadline=None, at=T0 + 20 * M),
    )
    for later in (T0 + 30 * M, T0 + 5 * H):
        (reading,) = await handlers.ticket_sla(model, "t-1", now=later)
        assert reading.paused and reading.status == "paused"
        assert reading.remaining_seconds == 2400 and reading.percent_used == 33.33
        assert reading.deadline is None and not reading.breached
        assert reading.pending_reason == "awaiting_requester"


async def test_a_running_timer_past_its_deadline_reads_overdue_and_breached_before_any_fact(
    model: SlaReadModel,
) -> None:
    await apply(model, fact(SlaStarted, 1))
    (reading,) = await handlers.ticket_sla(model, "t-1", now=T0 + H + 10 * M)
    assert reading.remaining_seconds == -600 and reading.breached
    assert reading.percent_used == pytest.approx(116.67)
    breached, total = await handlers.breached(
        model, TimerFilter(), now=T0 + H + 10 * M, since=None, until=None, limit=10, offset=0
    )
    assert total == 1 and breached[0].ticket_id == "t-1"
    none, total = await handlers.breached(
        model, TimerFilter(), now=T0 + 50 * M, since=None, until=None, limit=10, offset=0
    )
    assert (none, total) == ([], 0)


def test_on_a_business_calendar_the_remaining_time_is_spread_evenly_up_to_the_deadline() -> None:
    # 1 h of business time left, but the deadline is 3 h away (a lunch break, or the night).
    document = {
        "ticket_id": "t-1", "ticket_type": "incident", "metric": "resolution", "priority": "P3",
        "policy_id": "p", "policy_version": 1, "policy_name": "P3", "calendar": "berlin-office",
        "status": "running", "target_seconds": 7200, "elapsed_seconds": 3600,
        "deadline": T0 + 3 * H, "breached": False, "last_fact": "resumed", "last_fact_at": T0,
    }  # fmt: skip
    halfway = read_timer(document, T0 + 90 * M)
    assert halfway.percent_used == 75.0 and halfway.remaining_seconds == 90 * 60
    assert read_timer(document, T0 + 3 * H).percent_used == 100.0
    assert read_timer(document, T0 - M).elapsed_seconds == 3600  # before the fact: as of it


async def test_missed_and_breached_facts_mark_the_timer_breached_for_good(
    model: SlaReadModel,
) -> None:
    await apply(
        model,
        fact(SlaStarted, 1),
        fact(SlaBreached, 2, elapsed=3600, at=T0 + H),
        fact(SlaMissed, 3, status="breached", elapsed=4200, at=T0 + 70 * M),
    )
    document = await stored(model)
    assert document["breached"] is True and document["status"] == "breached"
    (reading,) = await handlers.ticket_sla(model, "t-1", now=T0 + 3 * H)
    assert reading.remaining_seconds == -600  # stopped 10 minutes over the target
    assert reading.breached and not reading.paused


async def test_at_risk_selects_running_timers_by_window_soonest_first(model: SlaReadModel) -> None:
    now = T0 + 10 * M
    await apply(
        model,
        fact(SlaStarted, 1, ticket="soon", deadline=T0 + 25 * M),
        fact(SlaStarted, 1, ticket="sooner", deadline=T0 + 15 * M),
        fact(SlaStarted, 1, ticket="later", deadline=T0 + 2 * H, target=7200),
        fact(SlaStarted, 1, ticket="overdue", deadline=T0 + 5 * M, target=300),
        fact(SlaPaused, 2, ticket="paused", status="paused", elapsed=3000, deadline=None),
        fact(SlaStarted, 1, ticket="p1", priority="P1", deadline=T0 + 20 * M),
    )
    window = AtRisk(within=30 * M)
    found, total = await handlers.at_risk(model, window, TimerFilter(), now=now, limit=10, offset=0)
    assert [r.ticket_id for r in found] == ["sooner", "p1", "soon"] and total == 3
    assert [r.remaining_seconds for r in found] == [300, 600, 900]

    page, total = await handlers.at_risk(model, window, TimerFilter(), now=now, limit=1, offset=1)
    assert [r.ticket_id for r in page] == ["p1"] and total == 3
    p1, _ = await handlers.at_risk(
        model, window, TimerFilter(priority="P1"), now=now, limit=10, offset=0
    )
    assert [r.ticket_id for r in p1] == ["p1"]
    none, _ = await handlers.at_risk(
        model, window, TimerFilter(metric="first_response"), now=now, limit=10, offset=0
    )
    assert none == []


async def test_at_risk_by_percent_used_or_window(model: SlaReadModel) -> None:
    now = T0 + 40 * M
    await apply(
        model,
        # 40 of 60 minutes used (67 %), deadline in 20 minutes
        fact(SlaStarted, 1, ticket="two-thirds"),
        # 40 of 240 minutes used (17 %), deadline in 200 minutes
        fact(SlaStarted, 1, ticket="fresh", target=4 * 3600, deadline=T0 + 4 * H),
        # 110 of 120 minutes used at T0, the last 10 spread over the 50 up to its deadline
        fact(SlaStarted, 1, ticket="nearly", target=7200, elapsed=6600, deadline=T0 + 50 * M),
        fact(SlaStarted, 1, ticket="service-request", ticket_type="service_request"),
    )
    used, total = await handlers.at_risk(
        model, AtRisk(percent=60), TimerFilter(), now=now, limit=10, offset=0
    )
    assert [r.ticket_id for r in used] == ["nearly", "service-request", "two-thirds"]
    assert total == 3
    assert used[0].percent_used == pytest.approx(100 * (6600 + 600 * 40 / 50) / 7200, abs=0.01)

    either, _ = await handlers.at_risk(
        model, AtRisk(within=4 * H, percent=90), TimerFilter(ticket_type="incident"), now=now,
        limit=10, offset=0,
    )  # fmt: skip
    assert [r.ticket_id for r in either] == ["nearly", "two-thirds", "fresh"]
    with pytest.raises(ValueError, match="window"):
        AtRisk()


async def test_breached_lists_latest_breach_first_within_a_time_range(
    model: SlaReadModel,
) -> None:
    await apply(
        model,
        fact(SlaBreached, 2, ticket="a", elapsed=3600, deadline=T0 + H, at=T0 + H),
        fact(SlaMissed, 3, ticket="b", status="breached", elapsed=3700, deadline=T0 + 2 * H,
             at=T0 + 2 * H, priority="P1"),
        fact(SlaMet, 2, ticket="met", status="met", elapsed=100),
    )  # fmt: skip
    now = T0 + 5 * H
    everything, total = await handlers.breached(
        model, TimerFilter(), now=now, since=None, until=None, limit=10, offset=0
    )
    assert [r.ticket_id for r in everything] == ["b", "a"] and total == 2
    early, _ = await handlers.breached(
        model, TimerFilter(), now=now, since=T0, until=T0 + 90 * M, limit=10, offset=0
    )
    assert [r.ticket_id for r in early] == ["a"]
    p1, _ = await handlers.breached(
        model, TimerFilter(priority="P1"), now=now, since=None, until=None, limit=10, offset=0
    )
    assert [r.ticket_id for r in p1] == ["b"]


async def test_facts_that_cannot_be_materialised_are_rejected_for_the_dead_letter_topic(
    model: SlaReadModel,
) -> None:
    with pytest.raises(PermanentEventError, match="sequence"):
        await apply(model, fact(SlaStarted, 0))
    with pytest.raises(PermanentEventError, match="subject"):
        await apply(model, fact(SlaStarted, 1, subject="someone-else"))
    assert await model.timers.collection.count_documents({}) == 0


async def test_events_of_other_types_are_ignored(model: SlaReadModel) -> None:
    other = Envelope(
        type="itsm.sla.something_new.v2", source="/x", subject="t-1", sequence=1, data={}
    )
    assert await apply(model, other) == [False]


async def test_a_ticket_without_timers_is_not_found(model: SlaReadModel) -> None:
    with pytest.raises(NotFound):
        await handlers.ticket_sla(model, "nobody", now=T0)
