"""A ticket's escalations, as one aggregate: the unit the service stores (one document, so each
change is one atomic write carrying its outbox events) and the unit every input is applied to.

- A trigger event seen before (same event id) changes nothing, whether it started an
  escalation or not: redeliveries are idempotent.
- The most specific policy in force answers a trigger (policies.py). While an escalation of
  that policy runs for the same ticket and SLA metric, another matching event (a second
  warning, a reassignment) starts no second ladder: one ladder per problem.
- A settlement (the ticket resolved, closed or cancelled; an SLA clock stopped) resolves the
  escalations it concerns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from services.notify.domain import escalation as esc
from services.notify.domain.escalation import Escalation
from services.notify.domain.model import AckVia, EscalationFact, Notification, Trigger
from services.notify.domain.policies import PolicyCatalog
from services.notify.domain.recipients import Directory
from services.notify.domain.triggers import Settlement
from shared.errors import NotFound


@dataclass(frozen=True)
class TicketEscalations:
    ticket_id: str
    escalations: tuple[Escalation, ...] = ()
    seen: frozenset[str] = frozenset()  # trigger event ids already handled

    def get(self, escalation_id: str) -> Escalation:
        for escalation in self.escalations:
            if escalation.id == escalation_id:
                return escalation
        raise NotFound(f"no escalation {escalation_id!r} on ticket {self.ticket_id}")

    @property
    def running(self) -> tuple[Escalation, ...]:
        return tuple(e for e in self.escalations if e.running)


Outcome = tuple[TicketEscalations, list[EscalationFact]]
Fired = tuple[TicketEscalations, list[Notification], list[EscalationFact]]


def on_trigger(
    book: TicketEscalations, trigger: Trigger, catalog: PolicyCatalog, now: datetime
) -> Outcome:
    """Start the escalation `trigger` calls for, if any; call `due` next, as a level with no
    delay is due at once."""
    if trigger.ticket_id != book.ticket_id:
        raise ValueError(f"trigger of ticket {trigger.ticket_id} applied to {book.ticket_id}")
    if trigger.event_id in book.seen:
        return book, []
    book = replace(book, seen=book.seen | {trigger.event_id})
    policy = catalog.select(trigger)
    if policy is None:
        return book, []
    if any(e.policy.id == policy.id and e.trigger.metric == trigger.metric for e in book.running):
        return book, []
    started, facts = esc.start(policy, trigger, now)
    return replace(book, escalations=(*book.escalations, started)), facts


def due(book: TicketEscalations, now: datetime, directory: Directory) -> Fired:
    """Fire what is due in every running escalation of the ticket."""
    escalations: list[Escalation] = []
    notifications: list[Notification] = []
    facts: list[EscalationFact] = []
    for escalation in book.escalations:
        if escalation.running:
            escalation, sent, happened = esc.due_levels(escalation, now, directory)
            notifications += sent
            facts += happened
        escalations.append(escalation)
    return replace(book, escalations=tuple(escalations)), notifications, facts


def next_wakeup(book: TicketEscalations) -> datetime | None:
    instants = (esc.next_wakeup(e) for e in book.escalations)
    return min((i for i in instants if i is not None), default=None)


def acknowledge(
    book: TicketEscalations, escalation_id: str, by: str, now: datetime, *, via: AckVia = "api"
) -> Outcome:
    """Raises NotFound for an unknown id, InvalidEscalationTransition when it has ended."""
    acknowledged, facts = esc.acknowledge(book.get(escalation_id), by, now, via=via)
    return _put(book, acknowledged), facts


def on_settlement(book: TicketEscalations, settled: Settlement, now: datetime) -> Outcome:
    if settled.ticket_id != book.ticket_id:
        raise ValueError(f"settlement of ticket {settled.ticket_id} applied to {book.ticket_id}")
    facts: list[EscalationFact] = []
    for escalation in book.escalations:
        if settled.metric is None or escalation.trigger.metric == settled.metric:
            escalation, happened = esc.settle(escalation, settled.reason, settled.cause, now)
            book = _put(book, escalation)
            facts += happened
    return book, facts


def _put(book: TicketEscalations, updated: Escalation) -> TicketEscalations:
    escalations = tuple(updated if e.id == updated.id else e for e in book.escalations)
    return replace(book, escalations=escalations)
