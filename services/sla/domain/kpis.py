"""Streaming KPIs, pure: what each incident event, SLA fact and change event adds to which bucket.

- `TicketKpiView` is what the KPIs remember of a ticket (its dims -- team = current assignment
  group, priority, service --, when it opened, whether it is open, responded, resolved before);
  the processor keeps it in the ticket's SLA state, so events that do not carry the dims
  (replied, rated, ...) land in the right bucket.
- `contributions(view, event, at, facts)` -> the new view and `KpiContribution`s; SLA facts the
  engine emitted for the event count too (met/missed -> compliance, breached -> breaches).
  `change_contributions(event, at)` does the same for change events.
- `plan(...)` turns one record's contributions into `KpiPlan`: the exact table writes, decided
  from the table as it was before the record (event-time lateness, backlog gauges). A plan is
  plain data: the processor stores it in the ticket's state before applying it, so a crash in
  between re-applies it; every write is guarded by its entry's source-offset watermark.

Buckets are UTC hour and day windows in event time (the envelope's time; an SLA fact's
`occurred_at`). A source partition's event-time clock is the latest event time it has seen; a
window is final once its end + grace is at or before that clock, and a contribution to a final
window is not applied: it counts as `late_events` in the current window of the same dims.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.sla.domain.kpi_partials import (
    GRANULARITIES,
    NO_FIGURES,
    NONE,
    WINDOW,
    Dims,
    DurationStat,
    Granularity,
    KpiFigures,
    KpiPartial,
    KpiSummary,
    partial_key,
    summarize,
    window_start,
)
from services.sla.domain.model import OPEN, Ticket
from services.sla.domain.policy import FIRST_RESPONSE, RESOLUTION
from shared.contracts.changes import ChangeCompleted, ChangeEvent
from shared.contracts.incidents import (
    IncidentAssigned,
    IncidentCancelled,
    IncidentClosed,
    IncidentCreated,
    IncidentEvent,
    IncidentMajorDeclared,
    IncidentRated,
    IncidentReopened,
    IncidentReplied,
    IncidentReprioritized,
    IncidentResolved,
    IncidentUpdated,
)
from shared.contracts.sla import SlaBreached, SlaEvent, SlaMet, SlaMissed

__all__ = [
    "Dims",
    "KpiContribution",
    "KpiFigures",
    "KpiPartial",
    "KpiPlan",
    "KpiSummary",
    "TicketKpiView",
    "change_contributions",
    "contributions",
    "merge_plans",
    "plan",
    "summarize",
]

SLA_METRICS = frozenset({FIRST_RESPONSE, RESOLUTION})  # OLAs are not the requester's SLA
SUCCESSFUL = frozenset({"successful", "successful_with_issues"})
DEFAULT_GRACE = timedelta(minutes=10)


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _parse(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"naive instant {text!r}")
    return value.astimezone(UTC)


# -- per-ticket view ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketKpiView:
    dims: Dims
    opened_at: datetime
    open: bool = True
    responded: bool = False
    resolutions: int = 0

    @classmethod
    def of_ticket(cls, ticket: Ticket) -> TicketKpiView:
        """For a state stored before the KPIs existed: what its SLA ticket already knows."""
        return cls(
            dims=Dims(ticket.group or NONE, ticket.priority, ticket.service or NONE),
            opened_at=ticket.opened_at,
            open=ticket.status in OPEN,
            responded=ticket.responded,
            resolutions=0 if ticket.status in OPEN else 1,
        )

    def to_document(self) -> dict[str, Any]:
        return {
            "team": self.dims.team,
            "priority": self.dims.priority,
            "service": self.dims.service,
            "opened_at": _instant(self.opened_at),
            "open": self.open,
            "responded": self.responded,
            "resolutions": self.resolutions,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> TicketKpiView:
        return cls(
            dims=Dims(str(doc["team"]), str(doc["priority"]), str(doc["service"])),
            opened_at=_parse(doc["opened_at"]),
            open=bool(doc["open"]),
            responded=bool(doc["responded"]),
            resolutions=int(doc["resolutions"]),
        )


@dataclass(frozen=True)
class KpiContribution:
    """What one fact adds to the bucket of `dims` at event time `at`. `open_delta` moves the
    backlog gauge of `dims`: +1 a ticket became open there, -1 it left."""

    dims: Dims
    at: datetime
    figures: KpiFigures = NO_FIGURES
    open_delta: int = 0


def _seconds(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0)


def _moved(view: TicketKpiView, dims: Dims, at: datetime) -> list[KpiContribution]:
    """A ticket whose dims changed leaves the backlog of the old ones for the new ones."""
    if dims == view.dims or not view.open:
        return []
    return [KpiContribution(view.dims, at, open_delta=-1), KpiContribution(dims, at, open_delta=1)]


def contributions(
    view: TicketKpiView | None,
    event: IncidentEvent,
    at: datetime,
    facts: Sequence[SlaEvent] = (),
) -> tuple[TicketKpiView | None, list[KpiContribution]]:
    """The view after `event` (which happened at `at`) and what it and its SLA `facts` add."""
    if view is None:
        if not isinstance(event, IncidentCreated):
            return None, []  # never saw the creation: nothing to attribute it to
        opened = min(event.opened_at if event.opened_at.tzinfo else at, at)
        view = TicketKpiView(
            Dims(NONE, event.priority, event.service or NONE), opened, open=event.status in OPEN
        )
        opened_delta = 1 if view.open else 0
        created = KpiContribution(view.dims, at, KpiFigures(opened=1), open_delta=opened_delta)
        return view, [created, *fact_contributions(view, facts)]
    out = fact_contributions(view, facts)
    new_view, changes = _follow(view, event, at)
    return new_view, [*out, *changes]


def _follow(
    view: TicketKpiView, event: IncidentEvent, at: datetime
) -> tuple[TicketKpiView, list[KpiContribution]]:
    dims = view.dims
    if isinstance(event, IncidentAssigned):
        new = replace(dims, team=event.group)
        return replace(view, dims=new), _moved(view, new, at)
    if isinstance(event, IncidentReprioritized | IncidentMajorDeclared):
        new = replace(dims, priority=event.priority)
        return replace(view, dims=new), _moved(view, new, at)
    if isinstance(event, IncidentUpdated) and "service" in event.changes:
        service = event.changes["service"].after
        new = replace(dims, service=str(service) if service else NONE)
        return replace(view, dims=new), _moved(view, new, at)
    if isinstance(event, IncidentReplied):
        if event.by_staff and event.first_response and not view.responded:
            first = KpiFigures(first_response=DurationStat.of(_seconds(view.opened_at, at)))
            return replace(view, responded=True), [KpiContribution(dims, at, first)]
        return view, []
    if isinstance(event, IncidentResolved):
        return _resolved(view, event, at)
    if isinstance(event, IncidentReopened):
        figures = KpiFigures(reopened=1)
        delta = 0 if view.open else 1
        return replace(view, open=True), [KpiContribution(dims, at, figures, open_delta=delta)]
    if isinstance(event, IncidentClosed | IncidentCancelled) and view.open:
        return replace(view, open=False), [KpiContribution(dims, at, open_delta=-1)]
    if isinstance(event, IncidentRated):
        figures = KpiFigures(csat_count=1, csat_sum=event.score)
        return view, [KpiContribution(dims, at, figures)]
    return view, []


def _resolved(
    view: TicketKpiView, event: IncidentResolved, at: datetime
) -> tuple[TicketKpiView, list[KpiContribution]]:
    # Like the SLA engine: a resolution is also the first answer the requester gets.
    first = None if view.responded else DurationStat.of(_seconds(view.opened_at, at))
    resolved_at = event.resolved_at if event.resolved_at.tzinfo else at
    figures = KpiFigures(resolved=1, first_response=first or DurationStat())
    if view.resolutions == 0:  # MTTR and FCR count a ticket's first resolution only
        figures = replace(
            figures,
            resolution=DurationStat.of(_seconds(view.opened_at, resolved_at)),
            fcr_eligible=1,
            fcr_count=int(event.first_contact_resolution),
        )
    new_view = replace(view, open=False, responded=True, resolutions=view.resolutions + 1)
    delta = -1 if view.open else 0
    return new_view, [KpiContribution(view.dims, at, figures, open_delta=delta)]


def fact_contributions(view: TicketKpiView, facts: Sequence[SlaEvent]) -> list[KpiContribution]:
    """SLA outcomes of the first-response and resolution timers, at the fact's own time, in the
    priority the ticket had then."""
    out = []
    for fact in facts:
        if fact.metric not in SLA_METRICS:
            continue
        if isinstance(fact, SlaMet):
            figures = KpiFigures(sla_met=1)
        elif isinstance(fact, SlaMissed):
            figures = KpiFigures(sla_missed=1)
        elif isinstance(fact, SlaBreached):
            figures = KpiFigures(breaches=1)
        else:
            continue
        dims = replace(view.dims, priority=fact.priority)
        out.append(KpiContribution(dims, fact.occurred_at, figures))
    return out


def change_contributions(event: ChangeEvent, at: datetime) -> list[KpiContribution]:
    """A completed change counts for the change success rate. Changes have no assignment group
    and no priority (team and priority "-"); the service is the first the change names."""
    if not isinstance(event, ChangeCompleted):
        return []
    service = event.services[0] if event.services else NONE
    figures = KpiFigures(changes_completed=1, changes_successful=int(event.outcome in SUCCESSFUL))
    return [KpiContribution(Dims(NONE, NONE, service), at, figures)]


# -- planning the table writes ------------------------------------------------------------------


@dataclass(frozen=True)
class SourceClock:
    """A source partition's event-time clock: the latest event time applied."""

    event_time: datetime | None = None
    watermark: int = -1

    def to_document(self) -> dict[str, Any]:
        time = None if self.event_time is None else _instant(self.event_time)
        return {"event_time": time, "watermark": self.watermark}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> SourceClock:
        time = doc.get("event_time")
        return cls(None if time is None else _parse(time), int(doc["watermark"]))


@dataclass(frozen=True)
class Gauge:
    """Open tickets of one dims in one source partition."""

    open: int = 0
    watermark: int = -1


@dataclass(frozen=True)
class PartialUpdate:
    granularity: Granularity
    window_start: datetime
    dims: Dims
    figures: KpiFigures = NO_FIGURES
    backlog: int | None = None  # set the gauge's value, when the record moved it


@dataclass(frozen=True)
class KpiPlan:
    """The KPI table writes of the record at `offset` of (`topic`, `partition`)."""

    topic: str
    partition: int
    offset: int
    partials: tuple[PartialUpdate, ...] = ()
    gauges: tuple[tuple[Dims, int], ...] = ()  # the new open count of each dims moved
    clock: datetime | None = None  # the source's event-time clock after the record

    def to_document(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "partials": [
                {
                    "granularity": u.granularity,
                    "window_start": _instant(u.window_start),
                    "dims": [u.dims.team, u.dims.priority, u.dims.service],
                    "figures": u.figures.to_document(),
                    "backlog": u.backlog,
                }
                for u in self.partials
            ],
            "gauges": [[[d.team, d.priority, d.service], n] for d, n in self.gauges],
            "clock": None if self.clock is None else _instant(self.clock),
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> KpiPlan:
        partials = tuple(
            PartialUpdate(
                granularity=u["granularity"],
                window_start=_parse(u["window_start"]),
                dims=Dims(*u["dims"]),
                figures=KpiFigures.from_document(u["figures"]),
                backlog=None if u["backlog"] is None else int(u["backlog"]),
            )
            for u in doc["partials"]
        )
        gauges = tuple((Dims(*dims), int(n)) for dims, n in doc["gauges"])
        clock = None if doc["clock"] is None else _parse(doc["clock"])
        return cls(doc["topic"], int(doc["partition"]), int(doc["offset"]), partials, gauges, clock)


def is_final(
    granularity: Granularity, start: datetime, clock: datetime | None, grace: timedelta
) -> bool:
    return clock is not None and start + WINDOW[granularity] + grace <= clock


def plan(
    topic: str,
    partition: int,
    offset: int,
    items: Sequence[KpiContribution],
    *,
    clock: SourceClock,
    gauge: Callable[[Dims], int],
    grace: timedelta = DEFAULT_GRACE,
    seen: datetime | None = None,
) -> KpiPlan:
    """The writes for one record's contributions, given the source's clock before it and the
    current open count of each dims (`gauge`). `seen`: the record's own event time, which moves
    the source's clock even when the record contributes nothing."""
    before = clock.event_time
    times = [before, seen, *(c.at for c in items)]
    after = max([t.astimezone(UTC) for t in times if t is not None], default=None)
    updates: dict[tuple[Granularity, datetime, Dims], PartialUpdate] = {}

    def add(g: Granularity, start: datetime, dims: Dims, figures: KpiFigures) -> None:
        current = updates.get((g, start, dims)) or PartialUpdate(g, start, dims)
        updates[(g, start, dims)] = replace(current, figures=current.figures + figures)

    moved: dict[Dims, int] = {}
    for item in items:
        if item.open_delta:
            moved[item.dims] = moved.get(item.dims, 0) + item.open_delta
        if item.figures == NO_FIGURES:
            continue
        for g in GRANULARITIES:
            start = window_start(g, item.at)
            if is_final(g, start, before, grace):
                assert before is not None
                add(g, window_start(g, before), item.dims, KpiFigures(late_events=1))
            else:
                add(g, start, item.dims, item.figures)
    gauges = tuple((dims, gauge(dims) + delta) for dims, delta in moved.items())
    for dims, count in gauges:
        assert after is not None  # a move comes with a contribution, which has a time
        for g in GRANULARITIES:
            start = window_start(g, after)
            current = updates.get((g, start, dims)) or PartialUpdate(g, start, dims)
            updates[(g, start, dims)] = replace(current, backlog=count)
    return KpiPlan(topic, partition, offset, tuple(updates.values()), gauges, after)


def merge_plans(plans: Sequence[KpiPlan]) -> KpiPlan:
    """One plan with the writes of `plans` (one source, increasing offsets) applied in order:
    the figures of each partial summed, the last backlog and gauge value set, the latest clock,
    at the last plan's offset. Applying it leaves every entry as applying each plan in turn
    does, with one write per entry instead of one per plan."""
    if not plans:
        raise ValueError("no plans to merge")
    last = plans[-1]
    updates: dict[tuple[Granularity, datetime, Dims], PartialUpdate] = {}
    gauges: dict[Dims, int] = {}
    for before, each in zip((None, *plans), plans, strict=False):
        if (each.topic, each.partition) != (last.topic, last.partition):
            raise ValueError("plans of different sources cannot be merged")
        if before is not None and each.offset <= before.offset:
            raise ValueError("plans to merge must come in increasing offsets")
        for update in each.partials:
            key = (update.granularity, update.window_start, update.dims)
            current = updates.get(key)
            if current is None:
                updates[key] = update
                continue
            backlog = current.backlog if update.backlog is None else update.backlog
            updates[key] = replace(
                current, figures=current.figures + update.figures, backlog=backlog
            )
        gauges.update(each.gauges)
    clocks = [each.clock for each in plans if each.clock is not None]
    return KpiPlan(
        last.topic, last.partition, last.offset, tuple(updates.values()),
        tuple(gauges.items()), max(clocks, default=None),
    )  # fmt: skip


def apply_update(
    current: KpiPartial | None, update: PartialUpdate, topic: str, partition: int, offset: int
) -> KpiPartial | None:
    """The partial after `update` from the record at `offset`; None when it was applied already
    (a redelivery: the offset is at or below the partial's watermark)."""
    if current is None:
        current = KpiPartial(topic, partition, update.granularity, update.window_start, update.dims)
    if offset <= current.watermark:
        return None
    backlog = current.backlog if update.backlog is None else update.backlog
    return replace(
        current, figures=current.figures + update.figures, backlog=backlog, watermark=offset
    )


def partial_key_of(plan: KpiPlan, update: PartialUpdate) -> str:
    return partial_key(
        plan.topic, plan.partition, update.granularity, update.window_start, update.dims
    )
