"""One timer: a metric of a ticket, measured in business time against a target.

Its statuses move by a table, like the ticket lifecycles: running <-> paused; running or paused
-> met (stopped before the deadline), breached (stopped at or after it) or cancelled; met or
breached -> running again when the ticket is reopened or comes back to the group.

A timer holds the business time counted up to `since` (its last change); while running, the time
since then is counted through the calendar on demand. A running clock turns business time into
instants through the calendar alone, so when a timer starts running it computes when each alert
level (the warnings, then the breach at 100 %) falls due: that schedule is what the processor
wakes up for. A paused timer has no schedule, so nothing falls due while it waits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from services.sla.domain.calendar import business_time_between, reach
from services.sla.domain.policy import BREACH, Target
from shared.contracts.sla import TimerStatus

TimerAction = Literal["pause", "resume", "meet", "miss", "cancel", "reopen"]

TRANSITIONS: dict[tuple[TimerStatus, TimerAction], TimerStatus] = {
    ("running", "pause"): "paused",
    ("running", "meet"): "met",
    ("running", "miss"): "breached",
    ("running", "cancel"): "cancelled",
    ("paused", "resume"): "running",
    ("paused", "meet"): "met",
    ("paused", "miss"): "breached",
    ("paused", "cancel"): "cancelled",
    ("met", "reopen"): "running",
    ("breached", "reopen"): "running",
}
ACTIVE: frozenset[TimerStatus] = frozenset({"running", "paused"})
STOPPED: frozenset[TimerStatus] = frozenset({"met", "breached"})


@dataclass(frozen=True)
class Timer:
    metric: str
    target: Target
    status: TimerStatus
    started_at: datetime
    since: datetime  # when the status or target last changed
    elapsed: timedelta  # business time counted up to `since`
    deadline: datetime | None = None  # running, or once breached (then the breach instant)
    breached_at: datetime | None = None
    passed: frozenset[int] = frozenset()  # alert levels already due: each fires once per timer
    schedule: tuple[tuple[int, datetime], ...] = ()  # running: (level, when it falls due)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


def start(metric: str, target: Target, at: datetime) -> Timer:
    timer = Timer(metric, target, "running", started_at=at, since=at, elapsed=timedelta(0))
    return _arm(timer)


def elapsed_at(timer: Timer, now: datetime) -> timedelta:
    """Business time counted by `now`: paused and stopped time and off-hours are not counted,
    and asking about an instant before the last change answers with what was counted then."""
    if timer.status != "running" or now <= timer.since:
        return timer.elapsed
    return timer.elapsed + business_time_between(timer.target.calendar, timer.since, now)


def step(timer: Timer, action: TimerAction, at: datetime) -> Timer | None:
    """The timer after `action` at `at`, or None when the table does not allow it (events are
    facts about the ticket: a timer for which one means nothing is left as it is)."""
    status = TRANSITIONS.get((timer.status, action))
    if status is None:
        return None
    settled = _settle(timer, at)
    return _arm(replace(settled, status=status))


def stop(timer: Timer, at: datetime) -> Timer | None:
    """Met or breached: breached when the deadline has passed by `at`. A breach announced for an
    instant after `at` (a resolution delivered late) was premature, and does not count."""
    announced = timer.breached_at is not None and timer.breached_at <= at
    overdue = announced or elapsed_at(timer, at) >= timer.target.duration
    if not overdue and timer.breached_at is not None:
        timer = replace(timer, breached_at=None)  # the alert stays sent; the outcome is the truth
    return step(timer, "miss" if overdue else "meet", at)


def retarget(timer: Timer, target: Target, at: datetime) -> Timer:
    """Measure against another target from `at`, keeping the business time counted. Alert
    levels already passed stay passed, so a looser target neither repeats a warning nor undoes
    a breach; levels a stricter target has already reached fall due at `at`."""
    return _arm(replace(_settle(timer, at), target=target))


def take_due(timer: Timer, now: datetime) -> tuple[Timer, list[tuple[int, datetime]]]:
    """Every alert level due by `now`, each with the instant it fell due, lowest first; they
    are marked passed. Every level has its own alert, however late the processor looks: what
    is emitted for a state must not depend on when it was looked at, or a worker that takes
    over after a crash could number a different alert like one already published (levels
    due by a later instant only extend those due by an earlier one)."""
    due = sorted((level, when) for level, when in timer.schedule if when <= now)
    if not due:
        return timer, []
    highest = due[-1][0]
    passed = timer.passed | {lv for lv in timer.target.levels if lv <= highest}
    schedule = tuple((lv, w) for lv, w in timer.schedule if lv not in passed)
    updated = replace(timer, passed=passed, schedule=schedule)
    if highest == BREACH:
        updated = replace(updated, breached_at=due[-1][1], deadline=due[-1][1])
    return updated, due


def next_due(timer: Timer) -> datetime | None:
    return min((when for _, when in timer.schedule), default=None)


def _settle(timer: Timer, at: datetime) -> Timer:
    """Bank the business time counted up to `at` and restart the count from there."""
    at = max(at, timer.since)
    return replace(timer, elapsed=elapsed_at(timer, at), since=at)


def _arm(timer: Timer) -> Timer:
    """Recompute the deadline and the alert schedule for the timer's status and target."""
    if timer.status == "paused":
        return replace(timer, deadline=timer.breached_at, schedule=())
    if timer.status != "running":
        return replace(timer, schedule=())  # stopped: keeps the deadline it met or missed
    levels = timer.target.levels
    # A level already reached (a stricter target) needs no more time: it falls due at `since`.
    amounts = [max(timer.target.amount(level) - timer.elapsed, timedelta(0)) for level in levels]
    instants = reach(timer.target.calendar, timer.since, amounts)
    schedule = tuple(
        (lv, at) for lv, at in zip(levels, instants, strict=True) if lv not in timer.passed
    )
    return replace(timer, deadline=timer.breached_at or instants[-1], schedule=schedule)
