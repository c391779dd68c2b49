"""Incidents: record, read, list with filters, edit, and the timeline."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import AwareDatetime

from services.incidents import handlers
from services.incidents.api.deps import Reporter, Scope, Service, with_etag
from services.incidents.domain import OpenIncident, edit_details
from services.incidents.schemas import IncidentCreate, IncidentRead, IncidentUpdate, TimelineEntry
from services.incidents.store import IDEMPOTENCY_NAMESPACE, IncidentFilter
from shared.auth import Role
from shared.contracts.incidents import Priority, Status
from shared.errors import Forbidden
from shared.http.clock import Now
from shared.http.etag import RequiredIfMatch
from shared.http.idempotency import IdempotencyKeyHeader
from shared.http.pagination import Page, Pagination
from shared.http.problems import problem_responses
from shared.store.idempotency import HEADER, REPLAYED, IdempotencyKey

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])
PREFIX = router.prefix


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 422),
    summary="Record an incident or service request",
)
async def create_incident(
    body: IncidentCreate,
    user: Reporter,
    incidents: Service,
    now: Now,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> IncidentRead:
    requester = body.requester or user.subject
    if requester != user.subject and not (user.is_staff or Role.SERVICE in user.roles):
        raise Forbidden("only staff may record an incident on behalf of another user")
    command = OpenIncident(requester=requester, **body.model_dump(exclude={"requester"}))
    if idempotency_key is None:
        incident = await handlers.record(incidents, command, now=now)
    else:
        key = IdempotencyKey.of(IDEMPOTENCY_NAMESPACE, user.subject, idempotency_key, command)
        incident, replayed = await handlers.record_once(incidents, command, key, now=now)
        if replayed and not (await incidents.scope(user)).can_view(incident):
            raise Forbidden(f"this {HEADER}'s incident is no longer one you may see")
        if replayed:
            response.headers[REPLAYED] = "true"
    response.headers["Location"] = f"{PREFIX}/{incident.id}"
    with_etag(response, incident)
    return IncidentRead.of(incident)


@router.get("", responses=problem_responses(401, 403, 422), summary="List incidents")
async def list_incidents(
    scope: Scope,
    incidents: Service,
    page: Pagination,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    priority: Priority | None = None,
    group: Annotated[str | None, Query(max_length=200)] = None,
    assignee: Annotated[str | None, Query(max_length=200)] = None,
    requester: Annotated[str | None, Query(max_length=200)] = None,
    created_from: AwareDatetime | None = None,  # a naive instant is ambiguous: 422
    created_to: AwareDatetime | None = None,
    q: Annotated[str | None, Query(max_length=100, description="Text in the title")] = None,
) -> Page[IncidentRead]:
    filters = IncidentFilter(
        status=status_,
        priority=priority,
        group=group,
        assignee=assignee,
        requester=requester,
        created_from=created_from,
        created_to=created_to,
        text=q,
    )
    items, total = await handlers.list_incidents(
        incidents, scope, filters, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[IncidentRead.of(i) for i in items], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/{incident_id}", responses=problem_responses(401, 403, 404), summary="Get an incident")
async def get_incident(
    incident_id: str, scope: Scope, incidents: Service, response: Response
) -> IncidentRead:
    incident = await handlers.visible(incidents, scope, incident_id)
    with_etag(response, incident)
    return IncidentRead.of(incident)


@router.patch(
    "/{incident_id}",
    responses=problem_responses(401, 403, 404, 409, 412, 422, 428),
    summary="Edit descriptive fields (needs If-Match)",
)
async def edit_incident(
    incident_id: str,
    body: IncidentUpdate,
    scope: Scope,
    incidents: Service,
    now: Now,
    response: Response,
    expected: RequiredIfMatch,
) -> IncidentRead:
    fields = body.model_dump(exclude_unset=True)
    incident = await handlers.act(
        incidents,
        scope,
        incident_id,
        lambda i: edit_details(i, fields, actor=scope.subject, now=now),
        now=now,
        allowed=handlers.may_edit(set(fields)),
        expected_version=expected,
        denial="a requester may edit only the title and description",
    )
    with_etag(response, incident)
    return IncidentRead.of(incident)


@router.get(
    "/{incident_id}/timeline",
    responses=problem_responses(401, 403, 404),
    summary="Every change with actor, time and before/after (requesters see public entries)",
)
async def get_timeline(incident_id: str, scope: Scope, incidents: Service) -> list[TimelineEntry]:
    entries = await handlers.timeline(incidents, scope, incident_id)
    return [TimelineEntry.model_validate(e) for e in entries]
