"""From the contracts' events to the domain's inputs: what notify knows about a ticket, which
events may start an escalation, and which settle one.

SLA facts name the ticket, its priority and the metric but not its service or assignment group,
so notify follows each ticket's incident events into a `TicketView` and matches SLA facts with
it (an OLA metric names its group itself).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from services.notify.domain.clock import as_utc
from services.notify.domain.model import StopReason, Trigger
from services.notify.domain.policies import TRIGGER_TYPES
from shared.contracts.incidents import (
    IncidentAssigned,
    IncidentCancelled,
    IncidentClosed,
    IncidentCreated,
    IncidentEvent,
    IncidentMajorDeclared,
    IncidentReprioritized,
    IncidentResolved,
    IncidentUpdated,
    Priority,
    Status,
)
from shared.contracts.sla import SlaCancelled, SlaEvent, SlaMet, SlaMissed

OLA_PREFIX = "ola:"


@dataclass(frozen=True)
class TicketView:
    """What notify's templates and policies need of a ticket, as its events told it."""

    ticket_id: str
    status: Status
    priority: Priority | None = None
    number: str | None = None
    title: str | None = None
    requester: str | None = None
    service: str | None = None
    group: str | None = None
    assignee: str | None = None
    major: bool = False


@dataclass(frozen=True)
class Settlement:
    """The ticket, or one of its SLA clocks (`metric`), needs no more escalating; `cause` is
    the type of the event that settled it."""

    ticket_id: str
    reason: StopReason
    cause: str
    metric: str | None = None  # None: the whole ticket


def follow(view: TicketView | None, event: IncidentEvent) -> TicketView:
    """The ticket after `event` (every incident event carries the status after it)."""
    ticket = view or TicketView(ticket_id=event.incident_id, status=event.status)
    ticket = replace(ticket, status=event.status)
    if isinstance(event, IncidentCreated):
        return replace(
            ticket, priority=event.priority, number=event.number, title=event.title,
            requester=event.requester, service=event.service,
        )  # fmt: skip
    if isinstance(event, IncidentReprioritized):
        return replace(ticket, priority=event.priority)
    if isinstance(event, IncidentAssigned):
        return replace(ticket, group=event.group, assignee=event.assignee)
    if isinstance(event, IncidentMajorDeclared):
        return replace(ticket, major=True, priority=event.priority)
    if isinstance(event, IncidentUpdated):
        edited = {n: str(c.after) if c.after else None for n, c in event.changes.items()}
        title = edited.get("title", ticket.title)
        return replace(ticket, title=title, service=edited.get("service", ticket.service))
    return ticket


def incident_trigger(
    event_id: str, event: IncidentEvent, view: TicketView, at: datetime
) -> Trigger | None:
    """The trigger an incident event makes, `view` being the ticket after it; None for event
    types no policy can answer, or while the ticket's priority is unknown."""
    if event.event_type not in TRIGGER_TYPES or view.priority is None:
        return None
    return Trigger(
        event_id=event_id, event_type=event.event_type, ticket_id=event.incident_id,
        priority=view.priority, occurred_at=as_utc(at), service=view.service, group=view.group,
    )  # fmt: skip


def sla_trigger(event_id: str, event: SlaEvent, view: TicketView | None) -> Trigger | None:
    """The trigger an SLA fact makes (a warning or a breach); the ticket's service and group
    come from `view` when notify has seen the ticket's events, an OLA's group from its metric."""
    if event.event_type not in TRIGGER_TYPES:
        return None
    group = view.group if view else None
    if event.metric.startswith(OLA_PREFIX):
        group = event.metric.removeprefix(OLA_PREFIX)
    return Trigger(
        event_id=event_id, event_type=event.event_type, ticket_id=event.ticket_id,
        priority=event.priority, occurred_at=as_utc(event.occurred_at),
        service=view.service if view else None, group=group, metric=event.metric,
    )  # fmt: skip


_TICKET_ENDS: dict[type[IncidentEvent], StopReason] = {
    IncidentResolved: "resolved",
    IncidentClosed: "resolved",
    IncidentCancelled: "cancelled",
}
_CLOCK_STOPS: dict[type[SlaEvent], StopReason] = {
    SlaMet: "resolved",
    SlaMissed: "resolved",
    SlaCancelled: "cancelled",
}


def concerns_notify(event: SlaEvent) -> bool:
    """A warning or breach may start an escalation and a clock that stops settles them; a clock
    that starts, pauses or resumes is nothing notify acts on, so it reads and stores nothing for
    it (most of the SLA topic's facts)."""
    return event.event_type in TRIGGER_TYPES or type(event) in _CLOCK_STOPS


def settlement(event: IncidentEvent | SlaEvent) -> Settlement | None:
    """Resolving, closing or cancelling the ticket settles all its escalations; an SLA clock
    that stops (met, missed, cancelled) settles the escalations its warnings or breach
    started: a first-response breach is answered once someone has responded."""
    if isinstance(event, IncidentEvent):
        reason = _TICKET_ENDS.get(type(event))
        return Settlement(event.incident_id, reason, event.event_type) if reason else None
    stop = _CLOCK_STOPS.get(type(event))
    return Settlement(event.ticket_id, stop, event.event_type, event.metric) if stop else None
