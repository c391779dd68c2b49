"""SLA timers: one ticket's timers, timers at risk of breaching, and breached timers."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BeforeValidator

from services.sla import handlers
from services.sla.api.deps import Reach, ReadModel
from services.sla.api.schemas import TicketSla, TimerRead
from services.sla.store import TimerFilter
from shared.auth.reach import AgentReach
from shared.contracts.incidents import Priority, TicketType
from shared.contracts.sla import METRIC_PATTERN
from shared.errors import Invalid
from shared.http.clock import Now
from shared.http.pagination import Page, Pagination
from shared.http.problems import problem_responses

router = APIRouter(prefix="/api/v1/sla", tags=["sla"])

DEFAULT_WINDOW = timedelta(minutes=30)
LONGEST_WINDOW = timedelta(days=31)


def seconds_or_duration(value: object) -> object:
    """`1800` (seconds) as well as ISO 8601 `PT30M`: pydantic parses only the latter from text."""
    if isinstance(value, str) and value.replace(".", "", 1).isdigit():
        return float(value)
    return value


Metric = Annotated[
    str | None, Query(pattern=METRIC_PATTERN, max_length=200, description="e.g. resolution")
]


def timer_filter(
    reach: AgentReach | None,
    priority: Priority | None = None,
    metric: Metric = None,
    ticket_type: TicketType | None = None,
) -> TimerFilter:
    clauses = reach.clauses() if reach is not None else None
    return TimerFilter(
        priority=priority,
        metric=metric,
        ticket_type=ticket_type,
        reach=tuple(clauses) if clauses is not None else None,
    )


@router.get(
    "/tickets/{ticket_id}",
    responses=problem_responses(401, 403, 404, 422),
    summary="Every SLA/OLA timer of a ticket, with the time remaining now",
)
async def get_ticket_sla(
    ticket_id: Annotated[str, Path(min_length=1, max_length=200)],
    reach: Reach,
    model: ReadModel,
    now: Now,
) -> TicketSla:
    readings = await handlers.ticket_sla(model, ticket_id, now=now, reach=reach)
    return TicketSla(ticket_id=ticket_id, as_of=now, timers=[TimerRead.of(r) for r in readings])


@router.get(
    "/at-risk",
    responses=problem_responses(401, 403, 422),
    summary="Running timers close to their deadline, soonest first",
)
async def list_at_risk(
    reach: Reach,
    model: ReadModel,
    now: Now,
    page: Pagination,
    within: Annotated[
        timedelta | None,
        BeforeValidator(seconds_or_duration),
        Query(
            description="Deadline within this window: ISO 8601 duration (PT30M) or seconds. "
            "Without `within` and `percent`, 30 minutes."
        ),
    ] = None,
    percent: Annotated[
        float | None, Query(gt=0, le=100, description="Or at least this share of the target used")
    ] = None,
    priority: Priority | None = None,
    metric: Metric = None,
    ticket_type: TicketType | None = None,
) -> Page[TimerRead]:
    if within is not None and not timedelta(0) < within <= LONGEST_WINDOW:
        raise Invalid(f"within must be more than 0 and at most {LONGEST_WINDOW.days} days")
    if within is None and percent is None:
        within = DEFAULT_WINDOW
    items, total = await handlers.at_risk(
        model,
        handlers.AtRisk(within=within, percent=percent),
        timer_filter(reach, priority, metric, ticket_type),
        now=now,
        limit=page.limit,
        offset=page.offset,
    )
    return Page(
        items=[TimerRead.of(r) for r in items], total=total, limit=page.limit, offset=page.offset
    )


@router.get(
    "/breached",
    responses=problem_responses(401, 403, 422),
    summary="Timers that breached (or run past their deadline), latest breach first",
)
async def list_breached(
    reach: Reach,
    model: ReadModel,
    now: Now,
    page: Pagination,
    since: Annotated[
        datetime | None, Query(alias="from", description="Breached at or after (ISO 8601)")
    ] = None,
    until: Annotated[datetime | None, Query(alias="to", description="Breached before")] = None,
    priority: Priority | None = None,
    metric: Metric = None,
    ticket_type: TicketType | None = None,
) -> Page[TimerRead]:
    for name, value in (("from", since), ("to", until)):
        if value is not None and value.tzinfo is None:
            raise Invalid(f"{name} needs a time zone offset, e.g. 2026-03-02T09:00:00Z")
    if since is not None and until is not None and since >= until:
        raise Invalid("from must be before to")
    items, total = await handlers.breached(
        model,
        timer_filter(reach, priority, metric, ticket_type),
        now=now,
        since=since,
        until=until,
        limit=page.limit,
        offset=page.offset,
    )
    return Page(
        items=[TimerRead.of(r) for r in items], total=total, limit=page.limit, offset=page.offset
    )
