"""Change requests: create, read, list, edit, timeline, risk and the change calendar."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Response, status

from services.changes import handlers
from services.changes.api.deps import Scope, Service, with_etag
from services.changes.domain.actions import NewChange
from services.changes.domain.model import Plan, RiskAnswers, Window
from services.changes.domain.risk import assess_risk
from services.changes.domain.scheduling import within_maintenance
from services.changes.schemas import (
    CalendarChange,
    CalendarFreeze,
    CalendarMaintenance,
    CalendarRead,
    ChangeCreate,
    ChangeRead,
    ChangeUpdate,
    RiskRead,
)
from services.changes.store import IDEMPOTENCY_NAMESPACE, ChangeFilter
from shared.contracts.changes import ChangeStatus, ChangeType
from shared.errors import Invalid
from shared.http.clock import Now
from shared.http.etag import RequiredIfMatch
from shared.http.idempotency import IdempotencyKeyHeader
from shared.http.pagination import Page, Pagination
from shared.http.problems import problem_responses
from shared.store.idempotency import REPLAYED, IdempotencyKey

router = APIRouter(prefix="/api/v1/changes", tags=["changes"])
MAX_CALENDAR = timedelta(days=92)


def window_of(start: datetime | None, end: datetime | None) -> Window | None:
    return Window(start, end) if start and end else None


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 422),
    summary="Request a change (standard from a template, normal, or emergency)",
)
async def create_change(
    body: ChangeCreate,
    scope: Scope,
    changes: Service,
    now: Now,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ChangeRead:
    command = NewChange(
        title=body.title,
        change_type=body.change_type,
        requester=scope.subject,
        description=body.description,
        implementer=body.implementer,
        template=body.template,
        services=tuple(body.services),
        configuration_items=tuple(dict.fromkeys(body.configuration_items)),
        plan=Plan(**body.plan.model_dump()),
        window=window_of(body.planned_start, body.planned_end),
        answers=RiskAnswers(**body.risk_answers.model_dump()),
    )
    if idempotency_key is None:
        change = await handlers.create(changes, command, now=now)
    else:
        key = IdempotencyKey.of(IDEMPOTENCY_NAMESPACE, scope.subject, idempotency_key, command)
        # The key's change is the caller's own request (its id derives from the caller), and
        # a change's requester may always see it: no access check beyond the create's.
        change, replayed = await handlers.create_once(changes, command, key, now=now)
        if replayed:
            response.headers[REPLAYED] = "true"
    response.headers["Location"] = f"{router.prefix}/{change.id}"
    with_etag(response, change)
    return ChangeRead.of(change)


@router.get("", responses=problem_responses(401, 403, 422), summary="List changes")
async def list_changes(
    scope: Scope,
    changes: Service,
    page: Pagination,
    status_: Annotated[ChangeStatus | None, Query(alias="status")] = None,
    change_type: ChangeType | None = None,
    requester: Annotated[str | None, Query(max_length=200)] = None,
    implementer: Annotated[str | None, Query(max_length=200)] = None,
    item: Annotated[str | None, Query(max_length=200)] = None,
    service: Annotated[str | None, Query(max_length=200)] = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    incident: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only changes linked to this incident id (named in it, or suggested)",
        ),
    ] = None,
) -> Page[ChangeRead]:
    filters = ChangeFilter(
        status_, change_type, requester, implementer, item, service, q, incident=incident
    )
    items, total = await handlers.list_changes(
        changes, scope, filters, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[ChangeRead.of(c) for c in items], total=total, limit=page.limit, offset=page.offset
    )


@router.get(
    "/calendar",
    responses=problem_responses(401, 403, 422),
    summary="Changes, freezes and maintenance windows in a time range (at most 92 days)",
)
async def change_calendar(
    scope: Scope,
    changes: Service,
    start: datetime,
    end: datetime,
    zone: Annotated[str, Query(max_length=64, description="IANA zone for local times")] = "UTC",
) -> CalendarRead:
    if start.tzinfo is None or end.tzinfo is None:
        raise Invalid("start and end need a UTC offset (e.g. 2026-03-29T00:00:00+02:00)")
    if end <= start or end - start > MAX_CALENDAR:
        raise Invalid("end must be after start and at most 92 days later")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"unknown time zone {zone!r}") from None
    found: dict[str, Any] = await handlers.calendar(changes, Window(start, end), scope)
    return CalendarRead(
        start=start,
        end=end,
        zone=zone,
        changes=[
            CalendarChange(
                id=c.id,
                number=c.number,
                title=c.title,
                status=c.status,
                change_type=c.change_type,
                configuration_items=list(c.configuration_items),
                start=c.window.start,
                end=c.window.end,
            )
            for c in found["changes"]
        ],
        freezes=[
            CalendarFreeze(
                name=f.name, services=list(f.services), start=f.window.start, end=f.window.end
            )
            for f in found["freezes"]
        ],
        maintenance=[
            CalendarMaintenance(
                name=m.name,
                zone=m.zone,
                services=list(m.services),
                start=o.start,
                end=o.end,
                local_start=o.start.astimezone(ZoneInfo(zone)).isoformat(),
            )
            for m, o in found["maintenance"]
        ],
    )


@router.get("/{change_id}", responses=problem_responses(401, 403, 404), summary="Get a change")
async def get_change(
    change_id: str, scope: Scope, changes: Service, response: Response
) -> ChangeRead:
    change = await handlers.visible(changes, scope, change_id)
    with_etag(response, change)
    return ChangeRead.of(change)


@router.patch(
    "/{change_id}",
    responses=problem_responses(401, 403, 404, 409, 412, 422, 428),
    summary="Edit a draft (needs If-Match)",
)
async def edit_change(
    change_id: str,
    body: ChangeUpdate,
    scope: Scope,
    changes: Service,
    now: Now,
    response: Response,
    expected: RequiredIfMatch,
) -> ChangeRead:
    given = body.model_dump(exclude_unset=True)
    fields: dict[str, Any] = {
        k: v for k, v in given.items() if k in {"title", "description", "implementer"}
    }
    for name in ("services", "configuration_items"):
        if name in given:
            fields[name] = tuple(dict.fromkeys(given[name]))
    if "plan" in given:
        fields["plan"] = Plan(**given["plan"])
    if "risk_answers" in given:
        fields["answers"] = RiskAnswers(**given["risk_answers"])
    if "planned_start" in given:
        fields["window"] = window_of(body.planned_start, body.planned_end)
    change = await handlers.edit(
        changes, scope, change_id, fields, now=now, expected_version=expected
    )
    with_etag(response, change)
    return ChangeRead.of(change)


@router.get(
    "/{change_id}/risk",
    responses=problem_responses(401, 403, 404),
    summary="Preview the risk score and its reasons",
)
async def preview_risk(change_id: str, scope: Scope, changes: Service) -> RiskRead:
    change = await handlers.visible(changes, scope, change_id)
    inside = change.window is not None and within_maintenance(
        change.window, change.services, await changes.maintenance.all()
    )
    risk = assess_risk(change, within_maintenance=inside)
    return RiskRead(level=risk.level, score=risk.score, reasons=list(risk.reasons))


@router.get(
    "/{change_id}/timeline",
    responses=problem_responses(401, 403, 404),
    summary="The audit trail: every change with actor, time and before/after",
)
async def get_timeline(change_id: str, scope: Scope, changes: Service) -> list[dict[str, Any]]:
    change = await handlers.visible(changes, scope, change_id)
    return await changes.repo.read_field(change.id, "timeline") or []
