"""A ticket's SLA state: what the engine knows about the ticket, and its timers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from services.sla.domain.timers import Timer, elapsed_at
from shared.contracts.incidents import IncidentEvent, PendingReason, Priority, Status, TicketType
from shared.contracts.sla import SlaEvent, TimerStatus

OPEN: frozenset[Status] = frozenset({"new", "assigned", "in_progress", "pending"})

E = TypeVar("E", bound=SlaEvent)


@dataclass(frozen=True)
class Ticket:
    """The attributes of a ticket that choose and drive its timers, as its events told them."""

    id: str
    ticket_type: TicketType
    priority: Priority
    status: Status
    opened_at: datetime
    service: str | None = None
    group: str | None = None
    pending_reason: PendingReason | None = None
    responded: bool = False


@dataclass(frozen=True)
class SlaState:
    ticket_id: str
    ticket: Ticket | None = None  # None until the ticket's creation is applied
    timers: tuple[Timer, ...] = ()  # in the order they started
    clock: datetime | None = None  # the latest event instant applied: time never runs back
    applied_sequence: int = 0  # the ticket's last event sequence applied: redeliveries are skipped
    version: int = 0  # SLA facts emitted so far; the processor numbers them after it

    def timer(self, metric: str) -> Timer | None:
        return next((t for t in self.timers if t.metric == metric), None)


Outcome = tuple[SlaState, list[SlaEvent]]


@dataclass(frozen=True)
class TicketEvent:
    """An incident event as the engine consumes it: the payload, when it happened (the
    envelope's time) and the ticket's sequence number, when known."""

    event: IncidentEvent
    at: datetime
    sequence: int | None = None


@dataclass(frozen=True)
class TimerView:
    """A timer as seen at an instant, for the read API and dashboards."""

    metric: str
    status: TimerStatus
    policy_id: str
    policy_version: int
    target: timedelta
    elapsed: timedelta
    remaining: timedelta  # negative once breached: how late
    percent: float
    deadline: datetime | None
    breached: bool


def seconds(duration: timedelta) -> int:
    return duration // timedelta(seconds=1)


def fact(cls: type[E], ticket: Ticket, timer: Timer, at: datetime, **extra: Any) -> E:
    """The contract event for `timer` (already updated) as of `at`."""
    target = timer.target
    return cls(
        ticket_id=ticket.id,
        ticket_type=ticket.ticket_type,
        metric=timer.metric,
        priority=ticket.priority,
        policy_id=target.policy.id,
        policy_version=target.policy.version,
        policy_name=target.policy.name,
        calendar=target.calendar.name,
        status=timer.status,
        target_seconds=max(seconds(target.duration), 1),
        elapsed_seconds=seconds(elapsed_at(timer, at)),
        deadline=timer.deadline,
        occurred_at=at,
        **extra,
    )


def view(timer: Timer, now: datetime) -> TimerView:
    elapsed = elapsed_at(timer, now)
    target = timer.target.duration
    return TimerView(
        metric=timer.metric,
        status=timer.status,
        policy_id=timer.target.policy.id,
        policy_version=timer.target.policy.version,
        target=target,
        elapsed=elapsed,
        remaining=target - elapsed,
        percent=round(100 * elapsed / target, 2),
        deadline=timer.deadline,
        breached=elapsed >= target or (timer.breached_at is not None and timer.breached_at <= now),
    )
