"""The SLA engine: a ticket's incident events in, its SLA state and SLA facts out.

How the incident events drive the timers:

- created starts `first_response` and `resolution` at the incident's `opened_at` (an alert's
  start, possibly before intake), on the policy for its type, priority and service;
- the first public reply by staff meets or misses `first_response`; so does resolving the
  ticket, because the resolution is itself the answer the requester gets;
- pending pauses `resolution` and the group's OLA, for the pending reasons their policy pauses
  on; `first_response` never pauses (see policy.py). Any event that leaves pending resumes them
  (a status change, a reassignment, a resolution);
- resolved stops every running timer; reopened resumes `resolution` and the current group's OLA
  with the business time they had; closed and cancelled cancel what still runs;
- a new priority, service or group re-selects the policies: a different target keeps the
  elapsed business time and moves the deadline, no policy at all cancels the timer;
- assigned to another group stops the previous group's OLA and starts (or, when the ticket comes
  back, resumes) the new group's.

Before an event is applied, the alerts that fell due by its time are emitted, so a resolution
processed after its deadline reads `breached` then `missed`, whenever the processor last woke.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

from services.sla.domain.alerts import due_alerts
from services.sla.domain.calendar import as_utc
from services.sla.domain.model import (
    OPEN,
    Outcome,
    SlaState,
    Ticket,
    TicketEvent,
    fact,
    seconds,
)
from services.sla.domain.policy import (
    FIRST_RESPONSE,
    RESOLUTION,
    PolicyCatalog,
    SlaMetric,
    Target,
    ola_metric,
)
from services.sla.domain.timers import STOPPED, TimerAction, retarget, start, step, stop
from shared.contracts.incidents import (
    IncidentAssigned,
    IncidentCancelled,
    IncidentClosed,
    IncidentCreated,
    IncidentEvent,
    IncidentReopened,
    IncidentReplied,
    IncidentReprioritized,
    IncidentResolved,
    IncidentStatusChanged,
    IncidentUpdated,
)
from shared.contracts.registry import contract_for
from shared.contracts.sla import (
    SlaCancelled,
    SlaEvent,
    SlaMet,
    SlaMissed,
    SlaPaused,
    SlaResumed,
    SlaRetargeted,
    SlaStarted,
)

SLA_METRICS: tuple[SlaMetric, ...] = (FIRST_RESPONSE, RESOLUTION)


def new_state(ticket_id: str) -> SlaState:
    return SlaState(ticket_id=ticket_id)


def apply(
    state: SlaState,
    event: IncidentEvent,
    *,
    at: datetime,
    catalog: PolicyCatalog,
    sequence: int | None = None,
) -> Outcome:
    """The state after the ticket event `event` that happened at `at`, and the SLA facts it
    caused. An event at or below the last applied `sequence` is a redelivery: no change."""
    if event.incident_id != state.ticket_id:
        raise ValueError(f"event of ticket {event.incident_id} applied to {state.ticket_id}")
    if sequence is not None and sequence <= state.applied_sequence:
        return state, []
    at = as_utc(at)
    if state.clock is not None and at < state.clock:
        at = state.clock  # a producer's clock stepped back: counted time must not shrink
    state, before = due_alerts(state, at)
    work = _Work(state, at, catalog)
    if isinstance(event, IncidentCreated) and state.ticket is None:
        _created(work, event)
    elif state.ticket is not None:  # without its creation a ticket has nothing to measure
        work.follow(event)
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(work, event)
        work.follow_status()
    state = work.result(sequence)
    state, after = due_alerts(state, at)  # a stricter target or an old alert may be due at once
    return state, [*before, *work.facts, *after]


def apply_record(
    state: SlaState,
    type_name: str,
    data: Mapping[str, Any],
    *,
    at: datetime,
    catalog: PolicyCatalog,
    sequence: int | None = None,
) -> Outcome:
    """`apply` for an envelope's type and data: validated against the contract; events that are
    not about incidents change nothing. Raises UnknownEventType or ValidationError."""
    contract = contract_for(type_name)
    if not issubclass(contract, IncidentEvent):
        return state, []
    event = contract.model_validate(data)
    return apply(state, event, at=at, catalog=catalog, sequence=sequence)


def replay(events: Iterable[TicketEvent], *, until: datetime, catalog: PolicyCatalog) -> SlaState:
    """The SLA state of a ticket at `until` from its events in order (those after `until` are
    not applied), with the alerts due by then marked as emitted."""
    items = list(events)
    if not items:
        raise ValueError("no events to replay")
    state = new_state(items[0].event.incident_id)
    for item in items:
        if as_utc(item.at) > as_utc(until):
            break  # the log is ordered: the state at `until` is a prefix of it
        state, _ = apply(state, item.event, at=item.at, catalog=catalog, sequence=item.sequence)
    state, _ = due_alerts(state, until)
    return state


class _Work:
    """The changes one event makes, gathered before they become the new state."""

    def __init__(self, state: SlaState, at: datetime, catalog: PolicyCatalog) -> None:
        self.state = state
        self.ticket = state.ticket
        self.timers = {timer.metric: timer for timer in state.timers}
        self.at = at
        self.catalog = catalog
        self.facts: list[SlaEvent] = []

    @property
    def open_ticket(self) -> Ticket:
        assert self.ticket is not None
        return self.ticket

    def follow(self, event: IncidentEvent) -> None:
        """Every event carries the ticket's status after it."""
        ticket = self.open_ticket
        reason = ticket.pending_reason if event.status == "pending" else None
        if isinstance(event, IncidentStatusChanged) and event.status == "pending":
            reason = event.pending_reason
        self.ticket = replace(ticket, status=event.status, pending_reason=reason)

    def start(self, metric: str, target: Target, at: datetime) -> None:
        self.timers[metric] = start(metric, target, at)
        self.facts.append(fact(SlaStarted, self.open_ticket, self.timers[metric], at))

    def move(self, metric: str, action: TimerAction, cls: type[SlaEvent], **extra: Any) -> None:
        timer = self.timers.get(metric)
        moved = step(timer, action, self.at) if timer is not None else None
        if moved is not None:
            self.timers[metric] = moved
            self.facts.append(fact(cls, self.open_ticket, moved, self.at, **extra))

    def stop(self, metric: str) -> None:
        timer = self.timers.get(metric)
        stopped = stop(timer, self.at) if timer is not None and timer.active else None
        if stopped is not None:
            self.timers[metric] = stopped
            cls = SlaMet if stopped.status == "met" else SlaMissed
            self.facts.append(fact(cls, self.open_ticket, stopped, self.at))

    def cancel_all(self, reason: str) -> None:
        for metric, timer in list(self.timers.items()):
            if timer.active:
                self.move(metric, "cancel", SlaCancelled, reason=reason)

    def sla_target(self, metric: SlaMetric, at: datetime) -> Target | None:
        t = self.open_ticket
        policy = self.catalog.sla_policy(t.ticket_type, t.priority, t.service, t.group, at)
        return policy.target(metric) if policy is not None else None

    def ola_target(self, group: str) -> Target | None:
        t = self.open_ticket
        policy = self.catalog.ola_policy(group, t.ticket_type, t.priority, self.at)
        return policy.target() if policy is not None else None

    def rematch(self, reason: str) -> None:
        """Re-select the policies after an attribute that chooses them changed."""
        ticket = self.open_ticket
        wanted: dict[str, Target | None] = {
            metric: self.sla_target(metric, self.at)
            for metric in SLA_METRICS
            if not (metric == FIRST_RESPONSE and ticket.responded)
        }
        if ticket.group is not None:
            wanted[ola_metric(ticket.group)] = self.ola_target(ticket.group)
        for metric, target in wanted.items():
            if metric in self.timers:
                self.retarget(metric, target, reason)
            elif target is not None and ticket.status in OPEN:
                # No policy applied before: measured from now, as there was nothing to keep.
                self.start(metric, target, self.at)

    def retarget(self, metric: str, target: Target | None, reason: str) -> None:
        timer = self.timers.get(metric)
        if timer is None or not timer.active or target == timer.target:
            return
        if target is None:
            self.move(metric, "cancel", SlaCancelled, reason="no_policy")
            return
        moved = retarget(timer, target, self.at)
        self.timers[metric] = moved
        previous = timer.target
        self.facts.append(
            fact(
                SlaRetargeted, self.open_ticket, moved, self.at, reason=reason,
                previous_policy_id=previous.policy.id,
                previous_policy_version=previous.policy.version,
                previous_target_seconds=max(seconds(previous.duration), 1),
                previous_deadline=timer.deadline,
            )
        )  # fmt: skip

    def follow_status(self) -> None:
        """Pause or resume the active timers for the ticket's (pending) status."""
        ticket = self.open_ticket
        if ticket.status not in OPEN:
            return
        for metric, timer in list(self.timers.items()):
            if not timer.active:
                continue
            pause = ticket.status == "pending" and timer.target.pauses(ticket.pending_reason)
            if pause and timer.status == "running":
                self.move(metric, "pause", SlaPaused, pending_reason=ticket.pending_reason)
            elif not pause and timer.status == "paused":
                self.move(metric, "resume", SlaResumed, reason="left_pending")

    def result(self, sequence: int | None) -> SlaState:
        return replace(
            self.state,
            ticket=self.ticket,
            timers=tuple(self.timers.values()),
            clock=self.at,
            applied_sequence=max(self.state.applied_sequence, sequence or 0),
            version=self.state.version + len(self.facts),
        )


def _created(work: _Work, event: IncidentCreated) -> None:
    # An alert-born incident's clock started when the disruption did; a start time ahead of the
    # intake is clock skew at the source, so the clock starts at intake instead.
    opened = event.opened_at if event.opened_at.tzinfo else event.opened_at.replace(tzinfo=UTC)
    started = min(as_utc(opened), work.at)
    work.ticket = Ticket(
        id=event.incident_id, ticket_type=event.ticket_type, priority=event.priority,
        status=event.status, opened_at=started, service=event.service,
    )  # fmt: skip
    for metric in SLA_METRICS:
        target = work.sla_target(metric, started)
        if target is not None:
            work.start(metric, target, started)


def _replied(work: _Work, event: IncidentEvent) -> None:
    reply = cast(IncidentReplied, event)
    if reply.by_staff and reply.first_response:
        work.ticket = replace(work.open_ticket, responded=True)
        work.stop(FIRST_RESPONSE)


def _resolved(work: _Work, event: IncidentEvent) -> None:
    for metric in list(work.timers):
        work.stop(metric)


def _reopened(work: _Work, event: IncidentEvent) -> None:
    group = work.open_ticket.group
    for metric in (RESOLUTION, *([ola_metric(group)] if group else [])):
        work.move(metric, "reopen", SlaResumed, reason="reopened")


def _closed(work: _Work, event: IncidentEvent) -> None:
    work.cancel_all("closed")


def _cancelled(work: _Work, event: IncidentEvent) -> None:
    work.cancel_all("cancelled")


def _reprioritized(work: _Work, event: IncidentEvent) -> None:
    work.ticket = replace(work.open_ticket, priority=cast(IncidentReprioritized, event).priority)
    work.rematch("reprioritized")


def _updated(work: _Work, event: IncidentEvent) -> None:
    changes = cast(IncidentUpdated, event).changes
    if "service" in changes:
        service = changes["service"].after
        work.ticket = replace(work.open_ticket, service=str(service) if service else None)
        work.rematch("service_changed")


def _assigned(work: _Work, event: IncidentEvent) -> None:
    group = cast(IncidentAssigned, event).group
    previous = work.open_ticket.group
    if group == previous:
        return  # another assignee within the group: its OLA runs on
    work.ticket = replace(work.open_ticket, group=group)
    if previous is not None:
        work.stop(ola_metric(previous))
    timer = work.timers.get(ola_metric(group))
    if timer is not None and timer.status in STOPPED:  # back with a group: its time adds up
        work.move(timer.metric, "reopen", SlaResumed, reason="reassigned")
    work.rematch("reassigned")  # starts the group's OLA the first time, re-selects the SLA


_HANDLERS: dict[type[IncidentEvent], Callable[[_Work, IncidentEvent], None]] = {
    IncidentReplied: _replied,
    IncidentResolved: _resolved,
    IncidentReopened: _reopened,
    IncidentClosed: _closed,
    IncidentCancelled: _cancelled,
    IncidentReprioritized: _reprioritized,
    IncidentUpdated: _updated,
    IncidentAssigned: _assigned,
}
