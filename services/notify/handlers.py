"""Notify's use cases on events: follow tickets, start escalations from SLA and incident
facts, settle them, fire due levels, acknowledge, and notify subscribers.

Every one is idempotent under redelivery: a trigger event already seen starts nothing (the
ticket's escalations remember its id), a notification is logged under its dedup key once, and
settling or acknowledging twice changes nothing. A ticket's escalations are one document: each
change is one version-guarded write carrying its facts in the outbox. Its notifications are
logged just before that write, so a crash in between re-fires the same step with the same keys
(no duplicates), and a notification whose write lost a race is cancelled by the delivery worker
once the escalation is no longer running.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from services.notify.delivery_log import DeliveryRepository
from services.notify.domain import book as books
from services.notify.domain.book import Fired, TicketEscalations
from services.notify.domain.escalation import Escalation, awaits_acknowledgement
from services.notify.domain.model import AckVia, Trigger
from services.notify.domain.policies import PolicyCatalog
from services.notify.domain.recipients import Directory
from services.notify.domain.subscriptions import subscription_notifications
from services.notify.domain.triggers import (
    Settlement,
    TicketView,
    concerns_notify,
    follow,
    incident_trigger,
    settlement,
    sla_trigger,
)
from services.notify.facts import SOURCE, escalation_events
from services.notify.store import (
    EscalationRepository,
    GroupRepository,
    PersonRepository,
    PolicyStore,
    RotationRepository,
    StoredBook,
    SubscriptionStore,
    UsedTokens,
    ViewStore,
)
from shared.bus.port import TransientError
from shared.contracts.envelope import Envelope, sequenced
from shared.contracts.incidents import IncidentEvent
from shared.contracts.registry import contract_for, is_registered
from shared.contracts.sla import SlaEvent
from shared.errors import NotFound
from shared.store.errors import AlreadyExists, ConcurrencyConflict
from shared.store.repository import OnWrite
from shared.telemetry import trace_reference

log = structlog.get_logger(__name__)
WRITE_ATTEMPTS = 5
Change = Callable[[TicketEscalations], Fired]


def _ignore_wakeup(ticket_id: str, at: datetime | None) -> None:
    pass


def _ignore() -> None:
    pass


@dataclass
class Notify:
    """The notify service's stores, and who to tell after a write (the ticker's index, the
    delivery worker)."""

    policies: PolicyStore
    rotations: RotationRepository
    people: PersonRepository
    groups: GroupRepository
    subscriptions: SubscriptionStore
    escalations: EscalationRepository
    views: ViewStore
    deliveries: DeliveryRepository
    tokens: UsedTokens
    on_wakeup: Callable[[str, datetime | None], None] = _ignore_wakeup
    on_deliveries: Callable[[], None] = _ignore

    @classmethod
    def on(cls, database: Any, on_write: OnWrite | None = None) -> Notify:
        """Every store on one database; `on_write` is told of the writes that carry events
        (escalations and deliveries: the outbox relay's nudge)."""
        return cls(
            policies=PolicyStore(database),
            rotations=RotationRepository(database),
            people=PersonRepository(database),
            groups=GroupRepository(database),
            subscriptions=SubscriptionStore(database),
            escalations=EscalationRepository(database, on_write=on_write),
            views=ViewStore(database),
            deliveries=DeliveryRepository(database, on_write=on_write),
            tokens=UsedTokens(database),
        )

    async def ensure_indexes(self) -> None:
        await self.policies.ensure_indexes()
        await self.subscriptions.ensure_indexes()
        await self.escalations.ensure_indexes()
        await self.escalations.backfill_awaiting()
        await self.deliveries.ensure_indexes()


async def load_directory(notify: Notify) -> Directory:
    """Groups, rotations and quiet hours as they are now."""
    groups = await notify.groups.all()
    rotations = await notify.rotations.all()
    people = await notify.people.with_quiet_hours()
    return Directory(
        groups={g.name: g.members for g in groups},
        rotations={r.rotation.id: r.rotation for r in rotations},
        quiet_hours={p.user: p.quiet_hours for p in people if p.quiet_hours is not None},
    )


async def change_book(
    notify: Notify, ticket_id: str, change: Change, now: datetime, *, create: bool = True
) -> TicketEscalations | None:
    """Apply `change` to the ticket's escalations and store the outcome: its notifications in
    the delivery log, then the new state with its facts. Re-reads and re-applies on a
    concurrent write. None when the ticket has none and `create` is off."""
    for _ in range(WRITE_ATTEMPTS):
        stored = await notify.escalations.get(ticket_id)
        if stored is None and not create:
            notify.on_wakeup(ticket_id, None)
            return None
        before = stored.book if stored else TicketEscalations(ticket_id)
        # Later levels, fired by the ticker outside any trace, still join the starting trace.
        trace = stored.trace if stored and stored.trace else trace_reference()
        after, notifications, facts = change(before)
        if after == before:  # e.g. another replica fired it: wake up when the store says
            notify.on_wakeup(ticket_id, books.next_wakeup(before))
            return before
        if notifications:
            await notify.deliveries.insert_new(notifications, trace=trace)
        events = escalation_events(facts)
        version = stored.version if stored else 0
        envelopes = sequenced(ticket_id, version, events, source=SOURCE, time=now)
        updated = StoredBook(after, version + max(1, len(events)), trace)
        try:
            if stored is None:
                await notify.escalations.add(updated, envelopes)
            else:
                await notify.escalations.save(updated, version, envelopes)
        except (ConcurrencyConflict, AlreadyExists):
            continue
        notify.on_wakeup(ticket_id, books.next_wakeup(after))
        if notifications:
            notify.on_deliveries()
        return after
    raise TransientError(f"the escalations of ticket {ticket_id} kept changing; retrying")


def _settle(settled: Settlement, now: datetime) -> Change:
    def change(book: TicketEscalations) -> Fired:
        after, facts = books.on_settlement(book, settled, now)
        return after, [], facts

    return change


def _start(trigger: Trigger, catalog: PolicyCatalog, directory: Directory, now: datetime) -> Change:
    """Start the escalation the trigger calls for and fire what is due at once (level 1)."""

    def change(book: TicketEscalations) -> Fired:
        started, facts = books.on_trigger(book, trigger, catalog, now)
        fired, notifications, more = books.due(started, now, directory)
        return fired, notifications, [*facts, *more]

    return change


async def _escalate(notify: Notify, trigger: Trigger, now: datetime) -> None:
    catalog = await notify.policies.catalog()
    if catalog.select(trigger) is None:
        return  # no policy answers it: nothing to store
    directory = await load_directory(notify)
    await change_book(notify, trigger.ticket_id, _start(trigger, catalog, directory, now), now)


async def on_sla_event(notify: Notify, envelope: Envelope, *, now: datetime) -> None:
    """A breach or warning may start an escalation; a clock that stops settles the ones it
    started."""
    if not is_registered(envelope.type):
        return
    event = contract_for(envelope.type).model_validate(envelope.data)
    if not isinstance(event, SlaEvent) or not concerns_notify(event):
        return
    if 0 < envelope.sequence < await notify.views.last_sla_sequence(event.ticket_id):
        return  # older than a fact already applied: a stale breach must page no one
    settled = settlement(event)
    if settled is not None:
        await change_book(notify, event.ticket_id, _settle(settled, now), now, create=False)
    view, _ = await notify.views.get(event.ticket_id)
    trigger = sla_trigger(envelope.id, event, view)
    if trigger is not None:
        await _escalate(notify, trigger, now)
    if envelope.sequence > 0:
        await notify.views.applied_sla_sequence(event.ticket_id, envelope.sequence)


async def on_incident_event(notify: Notify, envelope: Envelope, *, now: datetime) -> None:
    """Follow the ticket; settle its escalations when it is resolved, closed or cancelled;
    start the escalation an incident event calls for; notify the subscribers."""
    if not is_registered(envelope.type):
        return
    event = contract_for(envelope.type).model_validate(envelope.data)
    if not isinstance(event, IncidentEvent):
        return
    view, last = await notify.views.get(event.incident_id)
    if 0 < envelope.sequence < last:
        # Older than the last event applied, whose work (and its own) was done before it:
        # a stale copy must neither start escalations nor notify anyone. The last one itself
        # (sequence == last) goes on: its redelivery completes what a crash interrupted.
        return
    if envelope.sequence > last:
        view = follow(view, event)
        if not await notify.views.put(view, envelope.sequence, last):
            raise TransientError(f"the view of ticket {event.incident_id} changed; retrying")
    elif view is None:  # unsequenced and never seen: follow it without storing
        view = follow(None, event)
    settled = settlement(event)
    if settled is not None:
        await change_book(notify, event.incident_id, _settle(settled, now), now, create=False)
    trigger = incident_trigger(envelope.id, event, view, envelope.time)
    if trigger is not None:
        await _escalate(notify, trigger, now)
    subscriptions = await notify.subscriptions.all()
    if subscriptions:
        directory = await load_directory(notify)
        planned = subscription_notifications(
            subscriptions, envelope.id, event, view, now, directory
        )
        if planned and await notify.deliveries.insert_new(planned):
            notify.on_deliveries()


async def fire_due(notify: Notify, ticket_id: str, *, now: datetime) -> TicketEscalations | None:
    """Fire every level of the ticket's escalations due by `now` (the ticker's work)."""
    directory = await load_directory(notify)

    def change(book: TicketEscalations) -> Fired:
        return books.due(book, now, directory)

    return await change_book(notify, ticket_id, change, now, create=False)


async def find_escalation(notify: Notify, escalation_id: str) -> Escalation:
    stored = await notify.escalations.of_escalation(escalation_id)
    if stored is None:
        raise NotFound(f"escalation {escalation_id} not found")
    return stored.book.get(escalation_id)


async def awaiting_acknowledgement(
    notify: Notify, paged: str | None, *, limit: int, offset: int
) -> tuple[list[tuple[Escalation, TicketView | None]], int]:
    """A page of the escalations someone may still take that paged `paged` (None: anyone's),
    longest waiting first, each with its ticket as notify knows it, and how many there are."""
    waiting = [
        e
        for stored in await notify.escalations.awaiting(paged)
        for e in stored.book.escalations
        if awaits_acknowledgement(e) and (paged is None or paged in e.notified)
    ]
    waiting.sort(key=lambda e: (e.started_at, e.id))
    page = waiting[offset : offset + limit]
    views = await notify.views.many(sorted({e.trigger.ticket_id for e in page}))
    return [(e, views.get(e.trigger.ticket_id)) for e in page], len(waiting)


async def acknowledge(
    notify: Notify, escalation_id: str, *, by: str, via: AckVia, now: datetime
) -> Escalation:
    """`by` takes the escalation: no further level fires. NotFound for an unknown id; a
    Conflict (409) naming the status when it was acknowledged or resolved already."""
    escalation = await find_escalation(notify, escalation_id)

    def change(book: TicketEscalations) -> Fired:
        after, facts = books.acknowledge(book, escalation_id, by, now, via=via)
        return after, [], facts

    after = await change_book(notify, escalation.trigger.ticket_id, change, now, create=False)
    if after is None:
        raise NotFound(f"escalation {escalation_id} not found")
    return after.get(escalation_id)


__all__ = [
    "Notify",
    "UsedTokens",
    "acknowledge",
    "awaiting_acknowledgement",
    "change_book",
    "find_escalation",
    "fire_due",
    "load_directory",
    "on_incident_event",
    "on_sla_event",
]
