"""KPIs: the merged figures of the KPI partials in a range, per window and group, and in total."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.sla import handlers
from services.sla.api.deps import Reader, ReadModel
from services.sla.domain.kpi_partials import Granularity, window_start
from services.sla.handlers import Dimension
from services.sla.store import KpiFilter
from shared.errors import Invalid
from shared.http.clock import Now
from shared.http.problems import problem_responses

router = APIRouter(prefix="/api/v1/kpis", tags=["kpis"])

# Without `from`: the last day of hours, or the last 30 days.
DEFAULT_SPAN: dict[Granularity, timedelta] = {"hour": timedelta(days=1), "day": timedelta(days=30)}
LONGEST_SPAN: dict[Granularity, timedelta] = {
    "hour": timedelta(days=31),
    "day": timedelta(days=366),
}
Dim = Annotated[str | None, Query(min_length=1, max_length=200)]


class KpiReport(BaseModel):
    granularity: Granularity
    from_: datetime = Field(alias="from", description="Start of the first window included")
    to: datetime = Field(description="Windows starting before this instant are included")
    group_by: list[Dimension]
    series: list[dict[str, Any]] = Field(
        description="Per window (and group): window_start, window_end, group, summary"
    )
    groups: list[dict[str, Any]] = Field(description="Per group over the whole range")
    total: dict[str, Any] = Field(description="Every matching partial merged")


@router.get(
    "",
    responses=problem_responses(401, 403, 422),
    summary="KPIs per hour or day window, by team, priority or service, with a total",
    response_model_by_alias=True,
)
async def get_kpis(
    user: Reader,
    model: ReadModel,
    now: Now,
    granularity: Granularity = "hour",
    since: Annotated[
        datetime | None, Query(alias="from", description="Default: one day (hour) or 30 days ago")
    ] = None,
    until: Annotated[datetime | None, Query(alias="to", description="Default: now")] = None,
    team: Dim = None,
    priority: Dim = None,
    service: Dim = None,
    group_by: Annotated[
        list[Dimension], Query(description="Dims to break the series down by (repeatable)")
    ] = [],  # noqa: B006 - FastAPI copies query defaults
) -> KpiReport:
    for name, value in (("from", since), ("to", until)):
        if value is not None and value.tzinfo is None:
            raise Invalid(f"{name} needs a time zone offset, e.g. 2026-03-02T09:00:00Z")
    until = until or now
    since = window_start(granularity, since or until - DEFAULT_SPAN[granularity])
    if since >= until:
        raise Invalid("from must be before to")
    if until - since > LONGEST_SPAN[granularity]:
        raise Invalid(
            f"{granularity} KPIs span at most {LONGEST_SPAN[granularity].days} days per request"
        )
    dims = list(dict.fromkeys(group_by))
    filters = KpiFilter(granularity, since, until, team=team, priority=priority, service=service)
    report = await handlers.kpis(model, filters, dims)
    return KpiReport.model_validate(
        {"granularity": granularity, "from": since, "to": until, "group_by": dims, **report}
    )
