"""Incidents HTTP API (thin: decode, call a handler, encode)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, status

from services.incidents import handlers
from services.incidents.domain import EditIncident, OpenIncident
from services.incidents.schemas import IncidentCreate, IncidentRead, IncidentUpdate
from services.incidents.store import IncidentRepository
from shared.auth import Principal, Role, require_roles
from shared.errors import Forbidden, PreconditionRequired
from shared.http.pagination import Page, Pagination
from shared.http.problems import problem_responses
from shared.store.counters import next_number

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])

Reporter = Annotated[
    Principal,
    Depends(require_roles(Role.REQUESTER, Role.AGENT, Role.MANAGER, Role.ADMIN, Role.SERVICE)),
]
Reader = Annotated[
    Principal, Depends(require_roles(Role.REQUESTER, Role.AGENT, Role.MANAGER, Role.ADMIN))
]


def get_store(request: Request) -> IncidentRepository:
    repo: IncidentRepository = request.app.state.incident_repository
    return repo


def get_now(request: Request) -> datetime:
    now: datetime = request.app.state.clock()
    return now


Store = Annotated[IncidentRepository, Depends(get_store)]
Now = Annotated[datetime, Depends(get_now)]


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(value: str | None) -> int:
    if not value:
        raise PreconditionRequired("send If-Match with the incident's ETag to change it")
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise PreconditionRequired(f"If-Match {value!r} is not an ETag of this API")
    return int(tag)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 422),
    summary="Record an incident",
)
async def create_incident(
    body: IncidentCreate,
    user: Reporter,
    repo: Store,
    now: Now,
    request: Request,
    response: Response,
) -> IncidentRead:
    requester = body.requester or user.subject
    if requester != user.subject and not (user.is_staff or Role.SERVICE in user.roles):
        raise Forbidden("only staff may record an incident on behalf of another user")
    command = OpenIncident(
        title=body.title,
        description=body.description,
        requester=requester,
        impact=body.impact,
        urgency=body.urgency,
        ticket_type=body.ticket_type,
        service=body.service,
    )
    database = request.app.state.incident_database
    incident = await handlers.create_incident(
        command, repo=repo, next_number=lambda: next_number(database, "incident"), now=now
    )
    response.headers["Location"] = f"{router.prefix}/{incident.id}"
    response.headers["ETag"] = etag(incident.version)
    return IncidentRead.of(incident)


@router.get("", responses=problem_responses(401, 403, 422), summary="List incidents")
async def list_incidents(user: Reader, repo: Store, page: Pagination) -> Page[IncidentRead]:
    items, total = await handlers.list_incidents(
        repo=repo, user=user, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[IncidentRead.of(i) for i in items], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/{incident_id}", responses=problem_responses(401, 403, 404), summary="Get an incident")
async def get_incident(
    incident_id: str, user: Reader, repo: Store, response: Response
) -> IncidentRead:
    incident = await handlers.get_incident(incident_id, repo=repo, user=user)
    response.headers["ETag"] = etag(incident.version)
    return IncidentRead.of(incident)


@router.patch(
    "/{incident_id}",
    responses=problem_responses(401, 403, 404, 409, 412, 422, 428),
    summary="Edit an incident's description or classification (needs If-Match)",
)
async def edit_incident(
    incident_id: str,
    body: IncidentUpdate,
    user: Reader,
    repo: Store,
    now: Now,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> IncidentRead:
    command = EditIncident(**body.model_dump(exclude_unset=True))
    incident = await handlers.edit_incident(
        incident_id,
        command,
        expected_version=parse_if_match(if_match),
        repo=repo,
        user=user,
        now=now,
    )
    response.headers["ETag"] = etag(incident.version)
    return IncidentRead.of(incident)
