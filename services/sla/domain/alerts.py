"""Warnings and breaches as time passes, and when the processor must next look.

The processor keeps one wake-up per ticket at `next_wakeup(state)`; at that instant (or any
later one) `due_alerts(state, now)` returns the alerts that fell due and a state that remembers
them, so a replayed tick or a redelivered event never repeats one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from services.sla.domain.calendar import as_utc
from services.sla.domain.model import Outcome, SlaState, TimerView, fact, view
from services.sla.domain.policy import BREACH
from services.sla.domain.timers import next_due, take_due
from shared.contracts.sla import SlaBreached, SlaEvent, SlaWarning


def due_alerts(state: SlaState, now: datetime) -> Outcome:
    """The warnings and breaches due by `now` not yet emitted, each stamped with the instant it
    fell due (a breach with its deadline), in the order they fell due."""
    now = as_utc(now)
    if state.ticket is None:
        return state, []
    timers = []
    alerts: list[SlaEvent] = []
    for timer in state.timers:
        if timer.status == "running":
            timer, due = take_due(timer, now)
            for level, when in due:
                if level == BREACH:
                    alerts.append(fact(SlaBreached, state.ticket, timer, when))
                else:
                    alerts.append(fact(SlaWarning, state.ticket, timer, when, threshold=level))
        timers.append(timer)
    if not alerts:
        return state, []
    alerts.sort(key=lambda alert: alert.occurred_at)  # stable: timers keep their start order
    return replace(state, timers=tuple(timers), version=state.version + len(alerts)), alerts


def next_wakeup(state: SlaState) -> datetime | None:
    """The earliest instant at which `due_alerts` has something to return; None when nothing
    can fall due (no running timer, or every level passed). It may already be past when alerts
    are due now."""
    instants = [next_due(t) for t in state.timers if t.status == "running"]
    return min((i for i in instants if i is not None), default=None)


def snapshot(state: SlaState, now: datetime) -> list[TimerView]:
    """Every timer of the ticket as seen at `now`."""
    now = as_utc(now)
    return [view(timer, now) for timer in state.timers]
