"""Invariants of the SLA engine, checked with generated calendars and ticket histories around
the DST changes of Europe/Berlin, America/New_York and Australia/Lord_Howe (a 30-minute shift).

Deterministic (derandomized) and kept small so the module runs in a few seconds."""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.sla.domain import (
    BusinessCalendar,
    OlaPolicy,
    PolicyCatalog,
    SlaPolicy,
    SlaState,
    TicketEvent,
    add_business_time,
    apply,
    business_time_between,
    due_alerts,
    is_working,
    new_state,
    next_wakeup,
    replay,
    snapshot,
    working_intervals,
)
from services.sla.domain.model import OPEN
from services.sla.processor.publishing import fact_envelopes
from shared.contracts.incidents import PendingReason, Priority
from shared.contracts.sla import SlaBreached, SlaEvent, SlaWarning
from tests.unit.test_sla_engine import Story

PROPERTY = settings(
    max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
H = timedelta(hours=1)
US = timedelta(microseconds=1)
QUARTER = 900
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
ANCHORS = [
    datetime(2026, m, d, tzinfo=UTC)
    for m, d in [(3, 8), (3, 29), (4, 5), (10, 4), (10, 25), (11, 1), (6, 15)]
]  # the 2026 DST changes of those zones, and a plain day
# Wall-clock boundaries that avoid 01:00-03:00 local, where these zones change their clocks: a
# boundary there is ambiguous and the slot oracle below reads it differently by definition.
SAFE_QUARTERS = [q for q in range(97) if not 4 <= q <= 11]


@st.composite
def calendars(draw: st.DrawFn, quarters: list[int] | None = None) -> BusinessCalendar:
    points = quarters or list(range(97))
    if draw(st.booleans()) and quarters is None:
        return BusinessCalendar("24x7", draw(st.sampled_from(ZONES)))
    week = []
    for _ in range(7):
        chosen = sorted(draw(st.lists(st.sampled_from(points), max_size=4, unique=True)))
        chosen = chosen[: len(chosen) // 2 * 2]
        week.append(
            tuple(
                (a * QUARTER, b * QUARTER) for a, b in zip(chosen[::2], chosen[1::2], strict=True)
            )
        )
    if not any(week):
        week[0] = ((8 * 3600, 17 * 3600),)
    holidays = draw(
        st.frozensets(
            st.sampled_from([a.date() + timedelta(days=k) for a in ANCHORS for k in (-1, 0, 1)]),
            max_size=4,
        )
    )
    return BusinessCalendar("generated", draw(st.sampled_from(ZONES)), tuple(week), holidays)


def instants(*, on_quarter_hours: bool = False) -> st.SearchStrategy[datetime]:
    """Within three days of a DST change, to the microsecond (or on the quarter hour)."""
    if on_quarter_hours:
        quarters = st.integers(-3 * 96, 3 * 96).map(lambda q: q * timedelta(seconds=QUARTER))
        return st.builds(operator.add, st.sampled_from(ANCHORS), quarters)
    offsets = st.timedeltas(-3 * 24 * H, 3 * 24 * H)
    return st.builds(operator.add, st.sampled_from(ANCHORS), offsets)


# --- calendars -------------------------------------------------------------------------------


@PROPERTY
@given(calendars(), instants(), st.timedeltas(timedelta(0), 72 * H))
def test_adding_and_measuring_business_time_are_inverse(
    cal: BusinessCalendar, start: datetime, amount: timedelta
) -> None:
    deadline = add_business_time(cal, start, amount)
    assert business_time_between(cal, start, deadline) == amount
    if amount > timedelta(0):
        # the first such instant, inside working hours or at the end of an interval
        assert business_time_between(cal, start, deadline - US) < amount
        assert is_working(cal, deadline - US)


@PROPERTY
@given(calendars(SAFE_QUARTERS), instants(on_quarter_hours=True), st.integers(0, 4 * 96))
def test_business_time_counts_exactly_the_working_wall_clock_time(
    cal: BusinessCalendar, start: datetime, quarters: int
) -> None:
    # An independent oracle: a quarter hour counts when the local clock at its start reads a
    # working time on a working date. Boundaries sit on quarter hours in every zone used.
    zone = ZoneInfo(cal.zone)
    slots = [start + k * timedelta(seconds=QUARTER) for k in range(quarters)]
    expected = timedelta(seconds=QUARTER) * sum(
        1 for slot in slots if _working_wall_clock(cal, zone, slot)
    )
    assert (
        business_time_between(cal, start, start + quarters * timedelta(seconds=QUARTER)) == expected
    )


@PROPERTY
@given(
    calendars(),
    instants(),
    st.timedeltas(timedelta(0), 4 * 24 * H),
    st.timedeltas(timedelta(0), 4 * 24 * H),
)
def test_business_time_adds_up_and_intervals_are_ordered(
    cal: BusinessCalendar, a: datetime, first: timedelta, second: timedelta
) -> None:
    b, c = a + first, a + first + second
    assert business_time_between(cal, a, c) == business_time_between(
        cal, a, b
    ) + business_time_between(cal, b, c)
    intervals = working_intervals(cal, a, c)
    assert all(a <= x < y <= c for x, y in intervals)
    assert all(y1 < x2 for (_, y1), (x2, _) in pairwise(intervals))  # merged when touching


def _working_wall_clock(cal: BusinessCalendar, zone: ZoneInfo, instant: datetime) -> bool:
    local = instant.astimezone(zone)
    second = local.hour * 3600 + local.minute * 60 + local.second
    spans = () if local.date() in cal.holidays else cal.week[local.weekday()]
    return any(s <= second < e for s, e in spans)


# --- the engine ------------------------------------------------------------------------------

BERLIN = BusinessCalendar.weekly(
    "berlin",
    "Europe/Berlin",
    dict.fromkeys(range(5), "08:00-12:00, 13:00-17:00"),
    [date(2026, 3, 30)],
)
NEW_YORK = BusinessCalendar.weekly(
    "ny", "America/New_York", {**dict.fromkeys(range(5), "09:00-17:00"), 6: "00:00-06:00"}
)
LORD_HOWE = BusinessCalendar.weekly(
    "lord-howe", "Australia/Lord_Howe", dict.fromkeys(range(7), "00:00-01:00, 03:00-24:00")
)
ALWAYS = BusinessCalendar("24x7")


def _sla(
    pid: str,
    priority: Priority,
    cal: BusinessCalendar,
    response: timedelta,
    resolution: timedelta,
    **kw: object,
) -> SlaPolicy:
    return SlaPolicy(pid, 1, pid, "incident", priority, cal, response, resolution, **kw)  # type: ignore[arg-type]


CATALOG = PolicyCatalog(
    sla=(
        _sla("p1", "P1", ALWAYS, 15 * timedelta(minutes=1), 4 * H),
        _sla("p2", "P2", BERLIN, H, 8 * H),
        _sla("p3", "P3", NEW_YORK, 4 * H, 24 * H),
        _sla("p4", "P4", LORD_HOWE, 2 * H, 16 * H, pause_on=frozenset({"awaiting_requester"})),
        _sla("mail-p2", "P2", ALWAYS, 30 * timedelta(minutes=1), 4 * H, service="mail"),
    ),
    ola=(
        OlaPolicy("net", 1, "net", "network", 2 * H, BERLIN),
        OlaPolicy("db", 1, "db", "database", 3 * H, NEW_YORK),
        OlaPolicy("db-p1", 1, "db-p1", "database", H, ALWAYS, priority="P1"),
    ),
)
GROUPS = ["network", "database", "desk"]
REASONS: list[PendingReason] = ["awaiting_requester", "awaiting_vendor", "awaiting_change"]
PRIORITIES: list[Priority] = ["P1", "P2", "P3", "P4"]
# Weighted by repetition: pending and resuming often, ending the ticket rarely.
ACTIONS = [
    *["pend", "resume"] * 3, *["assign", "reply", "reprioritize", "note"] * 2, "service",
    "resolve", "reopen", "close", "cancel",
]  # fmt: skip
GAPS = st.one_of(
    st.timedeltas(timedelta(0), H),
    st.timedeltas(timedelta(0), 4 * H),
    st.timedeltas(timedelta(0), 40 * H),
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[TicketEvent], datetime]:
    """A ticket's events in an order the incidents service allows, at non-decreasing times."""
    created = draw(instants())
    opened = created - draw(st.sampled_from([timedelta(0), timedelta(minutes=7), 3 * H]))
    story = Story(created, priority=draw(st.sampled_from(PRIORITIES)), opened_at=opened)
    at, responded = created, False
    steps = st.tuples(st.sampled_from(ACTIONS), GAPS, st.integers(0, 3))
    for action, gap, n in draw(st.lists(steps, min_size=2, max_size=14)):
        at += gap
        status = story.status
        if action == "assign" and status in OPEN:
            story.assign(GROUPS[n % 3], at)
        elif action == "pend" and status in ("new", "assigned", "in_progress"):
            if status == "new":  # the incidents service pends assigned tickets only
                story.assign(GROUPS[n % 3], at)
            story.pend(at, REASONS[n % 3])
        elif action == "resume" and status == "pending":
            story.resume(at)
        elif action == "reply" and status in (*OPEN, "resolved"):
            staff = n > 0
            story.reply(at, by_staff=staff, first=staff and not responded)
            responded = responded or staff
        elif action == "reprioritize" and status in OPEN:
            story.reprioritize(PRIORITIES[n], at)
        elif action in ("resolve", "cancel") and status in OPEN:
            (story.resolve if action == "resolve" else story.cancel)(at)
        elif action in ("reopen", "close") and status == "resolved":
            (story.reopen if action == "reopen" else story.close)(at)
        elif action == "service" and status in OPEN:
            story.change_service(["mail", "web"][n % 2], at)
        elif action == "note":
            story.note(at)
    return story.events, at + draw(st.timedeltas(timedelta(0), 50 * H))


def run_live(
    events: list[TicketEvent], ticks: list[timedelta], until: datetime
) -> tuple[SlaState, list[SlaEvent]]:
    """As the processor would: every event delivered twice, wake-ups between events."""
    state, facts = new_state(events[0].event.incident_id), []
    for i, item in enumerate(events):
        following = events[i + 1].at if i + 1 < len(events) else until
        for _ in range(2):
            state, new = apply(
                state, item.event, at=item.at, catalog=CATALOG, sequence=item.sequence
            )
            facts += new
        for tick in ticks[i :: len(events)]:
            when = min(item.at + tick, following)  # a wake-up never runs ahead of the next event
            for _ in range(2):
                state, new = due_alerts(state, when)
                facts += new
    state, new = due_alerts(state, until)
    return state, facts + new


@PROPERTY
@given(histories(), st.lists(st.timedeltas(timedelta(0), 20 * H), max_size=8))
def test_replay_is_deterministic_and_independent_of_when_the_processor_woke(
    history: tuple[list[TicketEvent], datetime], ticks: list[timedelta]
) -> None:
    events, until = history
    replayed = replay(events, until=until, catalog=CATALOG)
    assert replay(events, until=until, catalog=CATALOG) == replayed
    live, facts = run_live(events, ticks, until)
    # Only the number of facts may differ: a late wake-up folds lesser warnings into one.
    assert replace(live, version=0) == replace(replayed, version=0)
    assert live.version == len(facts)


@PROPERTY
@given(histories(), st.lists(st.timedeltas(timedelta(0), 20 * H), max_size=8))
def test_alerts_are_never_repeated(
    history: tuple[list[TicketEvent], datetime], ticks: list[timedelta]
) -> None:
    events, until = history
    _, facts = run_live(events, ticks, until)
    alerts = Counter(
        (f.metric, f.threshold if isinstance(f, SlaWarning) else 100)
        for f in facts
        if isinstance(f, SlaWarning | SlaBreached)
    )
    assert all(count == 1 for count in alerts.values()), alerts


@PROPERTY
@given(histories(), st.lists(st.timedeltas(timedelta(0), 30 * H), min_size=1, max_size=6))
def test_elapsed_time_never_decreases_as_time_advances(
    history: tuple[list[TicketEvent], datetime], probes: list[timedelta]
) -> None:
    events, until = history
    state, seen = new_state(events[0].event.incident_id), {}
    observations = []
    for i, item in enumerate(events):
        observations.append((item.at, state))  # just before the event...
        state, _ = apply(state, item.event, at=item.at, catalog=CATALOG, sequence=item.sequence)
        observations.append((item.at, state))  # ...and just after: an event never takes time back
        following = events[i + 1].at if i + 1 < len(events) else until
        observations += [(min(item.at + p, following), state) for p in probes]
    for now, observed in sorted(observations, key=lambda o: o[0]):
        for timer in snapshot(observed, now):
            assert timer.elapsed >= seen.get(timer.metric, timedelta(0))
            seen[timer.metric] = timer.elapsed


@PROPERTY
@given(histories())
def test_paused_and_off_hours_time_is_never_counted(
    history: tuple[list[TicketEvent], datetime],
) -> None:
    events, until = history
    state = replay(events, until=until, catalog=CATALOG)
    expected = _expected_elapsed(events, until)
    actual = {t.metric: t.elapsed for t in snapshot(state, until) if t.metric in expected}
    assert actual == expected  # every priority in the catalog has both targets


@PROPERTY
@given(histories())
def test_next_wakeup_is_exactly_when_something_falls_due(
    history: tuple[list[TicketEvent], datetime],
) -> None:
    events, _ = history
    state = new_state(events[0].event.incident_id)
    for item in events:
        state, _ = apply(state, item.event, at=item.at, catalog=CATALOG, sequence=item.sequence)
        wake = next_wakeup(state)
        if wake is None:
            assert all(t.status != "running" or not t.schedule for t in state.timers)
            continue
        assert due_alerts(state, wake - US)[1] == []
        assert due_alerts(state, wake)[1] != []
        for timer in state.timers:  # a deadline still ahead ends a stretch of working time
            if timer.status == "running" and timer.deadline and timer.deadline > timer.since:
                assert is_working(timer.target.calendar, timer.deadline - US)


def _expected_elapsed(events: list[TicketEvent], until: datetime) -> dict[str, timedelta]:
    """The SLA clocks computed the slow way: walk the history span by span and count business
    time only where the ticket was open, not paused by its policy, and the clock not stopped."""
    first = events[0].event
    created = events[0].at
    opened = first.opened_at  # type: ignore[attr-defined]
    attrs = {
        "priority": first.priority,
        "service": first.service,
        "group": None,
        "status": "new",
        "reason": None,
    }  # type: ignore[attr-defined]
    stopped = {"first_response": False, "resolution": False}
    elapsed = {"first_response": timedelta(0), "resolution": timedelta(0)}
    boundaries = [(opened, None), *((e.at, e.event) for e in events[1:]), (until, None)]
    previous = opened
    for at, event in [(created, None), *boundaries[1:]]:
        policy = CATALOG.sla_policy(
            "incident", attrs["priority"], attrs["service"], attrs["group"], previous
        )  # type: ignore[arg-type]
        assert policy is not None
        for metric in elapsed:
            target = policy.target(metric)  # type: ignore[arg-type]
            assert target is not None
            paused = attrs["status"] == "pending" and target.pauses(attrs["reason"])  # type: ignore[arg-type]
            if attrs["status"] in OPEN and not stopped[metric] and not paused:
                elapsed[metric] += business_time_between(target.calendar, previous, at)
        previous = at
        if event is None:
            continue
        kind = event.event_type.split(".")[2]
        attrs["status"] = event.status
        if event.status != "pending":
            attrs["reason"] = None
        elif kind == "status_changed":  # other events in pending keep the reason it was given
            attrs["reason"] = event.pending_reason  # type: ignore[attr-defined]
        if kind == "reprioritized":
            attrs["priority"] = event.priority  # type: ignore[attr-defined]
        elif kind == "assigned":
            attrs["group"] = event.group  # type: ignore[attr-defined]
        elif kind == "updated":
            attrs["service"] = event.changes["service"].after  # type: ignore[attr-defined]
        elif kind == "replied" and event.first_response:  # type: ignore[attr-defined]
            stopped["first_response"] = True
        elif kind == "resolved":
            stopped = dict.fromkeys(stopped, True)
        elif kind == "reopened":
            stopped["resolution"] = False
    return elapsed


@PROPERTY
@given(histories(), st.timedeltas(timedelta(0), 30 * H), st.timedeltas(timedelta(0), 30 * H))
def test_the_alerts_due_later_extend_the_alerts_due_earlier(
    history: tuple[list[TicketEvent], datetime], first: timedelta, more: timedelta
) -> None:
    """Whoever answers a ticket's wake-up, and however late (a new owner after a kill -9, a due
    record sent again), publishes the same alerts under the same sequences: the alerts due by a
    later instant are those due by an earlier one, then the ones in between, and the state
    comes out the same either way. So a repeat is always one downstream dedupe drops."""
    events, _ = history
    state = new_state(events[0].event.incident_id)
    for item in events:
        state, _ = apply(state, item.event, at=item.at, catalog=CATALOG, sequence=item.sequence)
        early, late = item.at + first, item.at + first + more
        at_once, alerts = due_alerts(state, late)
        first_state, earlier = due_alerts(state, early)
        both_state, rest = due_alerts(first_state, late)
        assert earlier + rest == alerts
        assert both_state == at_once
        numbered_once = fact_envelopes(at_once, alerts)  # as the processor numbers them
        numbered_twice = fact_envelopes(first_state, earlier) + fact_envelopes(both_state, rest)
        assert [(e.sequence, e.type, e.data) for e in numbered_once] == [
            (e.sequence, e.type, e.data) for e in numbered_twice
        ]
