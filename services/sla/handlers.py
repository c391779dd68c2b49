"""SLA read model use cases: materialise SLA facts and KPI partials from the bus, and answer the
read API's questions (a ticket's timers, timers at risk, breached timers, KPI series).

The figures a reader sees depend on the clock, so every reading takes `now`. The functions at
the top are pure (a fact in, document fields out; a document and `now` in, a reading out); the
use cases below them only add the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from services.sla.domain.kpis import KpiPartial, summarize
from services.sla.store import (
    ASSIGNMENT_SEQUENCE,
    AccessStore,
    Document,
    KpiFilter,
    KpiPartialStore,
    TimerFilter,
    TimerStore,
    timer_key,
)
from shared.auth.principal import Principal
from shared.auth.reach import SUPERVISORS, AgentReach
from shared.bus.port import PermanentEventError
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import AssignmentGroupSaved, IncidentAssigned
from shared.contracts.registry import contract_for, is_registered
from shared.contracts.sla import SlaEvent, SlaPaused, SlaWarning, TimerStatus
from shared.contracts.sla_kpis import KpiUpdated
from shared.errors import Invalid, NotFound

# Facts after which the timer counts as breached for good (until a retarget moves its target).
BREACH_FACTS = frozenset({"breached", "missed"})


def fact_name(event_type: str) -> str:
    """`itsm.sla.breached.v1` -> `breached`."""
    return event_type.split(".")[2]


def sla_fact(envelope: Envelope) -> SlaEvent | None:
    """The SLA fact an envelope carries, None for a type this service does not know (a newer
    producer's), or PermanentEventError when it cannot be materialised."""
    if not is_registered(envelope.type):
        return None
    contract = contract_for(envelope.type)
    if not issubclass(contract, SlaEvent):
        return None
    fact = contract.model_validate(envelope.data)
    if envelope.sequence < 1:
        raise PermanentEventError(f"SLA fact {envelope.id} has no sequence (the SLA state version)")
    if envelope.subject != fact.ticket_id:
        raise PermanentEventError(
            f"SLA fact {envelope.id} has subject {envelope.subject!r} but ticket {fact.ticket_id!r}"
        )
    return fact


def timer_fields(fact: SlaEvent, *, name: str, event_id: str, now: datetime) -> Document:
    """The timer document after `fact` (everything but the sequence guard)."""
    breached = (
        name in BREACH_FACTS
        or fact.status == "breached"
        or fact.elapsed_seconds >= fact.target_seconds
    )
    fields: Document = {
        "ticket_id": fact.ticket_id,
        "ticket_type": fact.ticket_type,
        "metric": fact.metric,
        "priority": fact.priority,
        "policy_id": fact.policy_id,
        "policy_version": fact.policy_version,
        "policy_name": fact.policy_name,
        "calendar": fact.calendar,
        "status": fact.status,
        "target_seconds": fact.target_seconds,
        "elapsed_seconds": fact.elapsed_seconds,
        "deadline": fact.deadline,
        "breached": breached,
        "last_fact": name,
        "last_fact_at": fact.occurred_at,
        "event_id": event_id,
        "materialised_at": now,
        "pending_reason": fact.pending_reason if isinstance(fact, SlaPaused) else None,
    }
    if isinstance(fact, SlaWarning):
        fields["warning_threshold"] = fact.threshold
    return fields


@dataclass(frozen=True)
class TimerReading:
    """A materialised timer as seen at an instant."""

    ticket_id: str
    ticket_type: str
    metric: str
    priority: str
    policy_id: str
    policy_version: int
    policy_name: str
    calendar: str
    status: TimerStatus
    target_seconds: int
    elapsed_seconds: int
    remaining_seconds: int  # running: deadline - now (negative once overdue); else target - elapsed
    percent_used: float
    deadline: datetime | None
    breached: bool
    paused: bool
    last_fact: str
    last_fact_at: datetime
    warning_threshold: int | None = None
    pending_reason: str | None = None


def estimated_elapsed(
    *, target: int, elapsed: int, fact_at: datetime, deadline: datetime, now: datetime
) -> float:
    """Business seconds a running timer has counted by `now`, from its last fact.

    The read side does not hold the calendars, so the remaining business time is spread evenly
    over the wall-clock time up to the deadline: exact on a 24x7 calendar, and on any calendar
    exact at the fact and at the deadline. Past the deadline the same pace goes on."""
    if now <= fact_at:
        return float(elapsed)
    left = target - elapsed
    span = (deadline - fact_at).total_seconds()
    pace = left / span if left > 0 and span > 0 else 1.0
    return elapsed + pace * (now - fact_at).total_seconds()


def read_timer(document: Document, now: datetime) -> TimerReading:
    status: TimerStatus = document["status"]
    target = int(document["target_seconds"])
    elapsed: float = int(document["elapsed_seconds"])
    deadline: datetime | None = document.get("deadline")
    overdue = False
    if status == "running" and deadline is not None:
        overdue = deadline <= now
        elapsed = estimated_elapsed(
            target=target,
            elapsed=int(elapsed),
            fact_at=document["last_fact_at"],
            deadline=deadline,
            now=now,
        )
        remaining = (deadline - now) // timedelta(seconds=1)
    else:
        remaining = target - int(elapsed)
    return TimerReading(
        ticket_id=document["ticket_id"],
        ticket_type=document["ticket_type"],
        metric=document["metric"],
        priority=document["priority"],
        policy_id=document["policy_id"],
        policy_version=int(document["policy_version"]),
        policy_name=document["policy_name"],
        calendar=document["calendar"],
        status=status,
        target_seconds=target,
        elapsed_seconds=int(elapsed),
        remaining_seconds=remaining,
        percent_used=round(100 * elapsed / target, 2),
        deadline=deadline,
        breached=bool(document["breached"]) or overdue,
        paused=status == "paused",
        last_fact=document["last_fact"],
        last_fact_at=document["last_fact_at"],
        warning_threshold=document.get("warning_threshold"),
        pending_reason=document.get("pending_reason"),
    )


@dataclass(frozen=True)
class AtRisk:
    """Running timers not yet past their deadline, whose deadline falls within `within` or whose
    share of the target used reaches `percent`."""

    within: timedelta | None = None
    percent: float | None = None

    def __post_init__(self) -> None:
        if self.within is None and self.percent is None:
            raise ValueError("at risk needs a window, a percent threshold or both")

    def selects(self, reading: TimerReading, now: datetime) -> bool:
        if reading.status != "running" or reading.deadline is None or reading.deadline <= now:
            return False
        soon = self.within is not None and reading.deadline <= now + self.within
        used = self.percent is not None and reading.percent_used >= self.percent
        return soon or used


Dimension = Literal["team", "priority", "service"]


def kpi_partial(envelope: Envelope) -> KpiPartial | None:
    """The KPI partial an envelope carries, None for another type, or PermanentEventError."""
    if envelope.type != KpiUpdated.event_type:
        return None
    try:
        partial = KpiPartial.from_document(envelope.data)
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentEventError(f"KPI partial {envelope.id} is unreadable: {exc}") from exc
    if envelope.subject != partial.key:
        raise PermanentEventError(
            f"KPI partial {envelope.id} has subject {envelope.subject!r}, not its key"
        )
    return partial


def kpi_fields(partial: KpiPartial, envelope: Envelope, *, now: datetime) -> Document:
    """The queryable dims and window of a partial, and the event's data (what `summarize`
    reads back through `KpiPartial.from_document`)."""
    return {
        "granularity": partial.granularity,
        "window_start": partial.window_start,
        "window_end": partial.window_end,
        "team": partial.dims.team,
        "priority": partial.dims.priority,
        "service": partial.dims.service,
        "source_topic": partial.source_topic,
        "source_partition": partial.source_partition,
        "watermark": partial.watermark,
        "final": partial.final,
        "partial": envelope.data,
        "event_id": envelope.id,
        "materialised_at": now,
    }


def kpi_report(partials: Sequence[KpiPartial], group_by: Sequence[Dimension]) -> dict[str, Any]:
    """One summary per window (and per group of the `group_by` dims), one per group over the
    whole range, and the total."""

    def group_of(partial: KpiPartial) -> tuple[str, ...]:
        return tuple(getattr(partial.dims, dim) for dim in group_by)

    windows: dict[tuple[datetime, tuple[str, ...]], list[KpiPartial]] = {}
    groups: dict[tuple[str, ...], list[KpiPartial]] = {}
    for partial in partials:
        windows.setdefault((partial.window_start, group_of(partial)), []).append(partial)
        groups.setdefault(group_of(partial), []).append(partial)
    series = [
        {
            "window_start": start,
            "window_end": members[0].window_end,
            "group": dict(zip(group_by, group, strict=True)),
            "summary": summarize(members).to_dict(),
        }
        for (start, group), members in sorted(windows.items())
    ]
    return {
        "series": series,
        "groups": [
            {"group": dict(zip(group_by, group, strict=True)), "summary": summarize(m).to_dict()}
            for group, m in sorted(groups.items())
        ]
        if group_by
        else [],
        "total": summarize(partials).to_dict(),
    }


# ---- use cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlaReadModel:
    """What the read API's use cases work with."""

    timers: TimerStore
    kpis: KpiPartialStore
    access: AccessStore
    # Selecting by percent used happens here, not in the database (it depends on the clock and
    # on two fields): at most this many running timers, soonest deadline first, are examined.
    at_risk_scan_limit: int = 5_000
    kpi_partial_limit: int = 50_000
    agents_see_all: bool = False  # as the incidents service's setting of that name


async def on_sla_fact(model: SlaReadModel, envelope: Envelope, *, now: datetime) -> bool:
    """Materialise one SLA fact; False when it changed nothing (unknown type, or not newer than
    what the timer's document already holds)."""
    fact = sla_fact(envelope)
    if fact is None:
        return False
    fields = timer_fields(fact, name=fact_name(envelope.type), event_id=envelope.id, now=now)
    assignment = await model.access.assignment(fact.ticket_id)
    applied = await model.timers.apply(
        timer_key(fact.ticket_id, fact.metric), envelope.sequence, {**fields, **assignment}
    )
    if applied:
        # An assignment stored since it was read may have missed this timer (not yet written)
        # and been overwritten by it: read it again and catch up.
        latest = await model.access.assignment(fact.ticket_id)
        if latest[ASSIGNMENT_SEQUENCE] > assignment[ASSIGNMENT_SEQUENCE]:
            await model.timers.assign(fact.ticket_id, latest)
    return applied


async def on_incident_event(model: SlaReadModel, envelope: Envelope, *, now: datetime) -> bool:
    """Follow who works which ticket: a group's members, a ticket's assignment. False when it
    changed nothing (another type, or not newer than what is stored)."""
    if envelope.type not in WHO_WORKS_WHAT:
        return False
    event = contract_for(envelope.type).model_validate(envelope.data)
    if envelope.sequence < 1:
        raise PermanentEventError(f"{envelope.type} {envelope.id} has no sequence")
    if isinstance(event, AssignmentGroupSaved):
        if envelope.subject != event.name:
            raise PermanentEventError(f"group event {envelope.id} is not keyed by its group")
        return await model.access.apply_group(
            event.name, envelope.sequence, event.tier, event.members
        )
    assigned = cast(IncidentAssigned, event)
    if envelope.subject != assigned.incident_id:
        raise PermanentEventError(f"incident event {envelope.id} is not keyed by its incident")
    ticket = assigned.incident_id
    applied = await model.access.apply_assignment(
        ticket, envelope.sequence, assigned.group, assigned.assignee
    )
    # Also after a redelivery: a crash may have come between the two writes.
    await model.timers.assign(ticket, await model.access.assignment(ticket))
    return applied


WHO_WORKS_WHAT = frozenset({AssignmentGroupSaved.event_type, IncidentAssigned.event_type})


async def reach_of(model: SlaReadModel, user: Principal) -> AgentReach | None:
    """The tickets an agent works (None: a manager or admin, who sees every ticket)."""
    if user.has_any(SUPERVISORS):
        return None
    memberships = await model.access.memberships(user.subject)
    return AgentReach.of(user.subject, memberships, everything=model.agents_see_all)


async def works_on(model: SlaReadModel, reach: AgentReach | None, ticket_id: str) -> bool:
    if reach is None or reach.everything:
        return True
    assignment = await model.access.assignment(ticket_id)
    return reach.reaches(assignment["assignment_group"], assignment["assignee"])


async def ticket_sla(
    model: SlaReadModel, ticket_id: str, *, now: datetime, reach: AgentReach | None = None
) -> list[TimerReading]:
    """A ticket's timers; not found, as if it had none, for an agent who does not work it."""
    worked = await works_on(model, reach, ticket_id)
    documents = await model.timers.of_ticket(ticket_id) if worked else []
    if not documents:
        raise NotFound(f"no SLA timers for ticket {ticket_id}")
    return [read_timer(d, now) for d in documents]


async def at_risk(
    model: SlaReadModel,
    selection: AtRisk,
    filters: TimerFilter,
    *,
    now: datetime,
    limit: int,
    offset: int,
) -> tuple[list[TimerReading], int]:
    """Timers at risk, soonest deadline first, and how many there are."""
    if selection.percent is None and selection.within is not None:
        documents, total = await model.timers.running_due_by(
            filters, now, now + selection.within, limit=limit, offset=offset
        )
        return [read_timer(d, now) for d in documents], total
    candidates = await model.timers.running_before_deadline(
        filters, now, limit=model.at_risk_scan_limit
    )
    readings = [r for r in (read_timer(d, now) for d in candidates) if selection.selects(r, now)]
    return readings[offset : offset + limit], len(readings)


async def breached(
    model: SlaReadModel,
    filters: TimerFilter,
    *,
    now: datetime,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[TimerReading], int]:
    documents, total = await model.timers.breached(
        filters, now, since=since, until=until, limit=limit, offset=offset
    )
    return [read_timer(d, now) for d in documents], total


async def on_kpi_partial(model: SlaReadModel, envelope: Envelope, *, now: datetime) -> bool:
    """Materialise one KPI partial snapshot; False when it is not newer than the stored one."""
    partial = kpi_partial(envelope)
    if partial is None:
        return False
    fields = kpi_fields(partial, envelope, now=now)
    return await model.kpis.apply(partial.key, partial.sequence, fields)


async def kpis(
    model: SlaReadModel, filters: KpiFilter, group_by: Sequence[Dimension]
) -> dict[str, Any]:
    documents = await model.kpis.matching(filters, limit=model.kpi_partial_limit + 1)
    if len(documents) > model.kpi_partial_limit:
        raise Invalid(
            f"more than {model.kpi_partial_limit} KPI partials match: narrow the range or filter "
            "by team, priority or service"
        )
    partials = [KpiPartial.from_document(d["partial"]) for d in documents]
    return kpi_report(partials, group_by)
