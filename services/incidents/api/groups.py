"""Assignment groups: support tiers (L1/L2/L3) with members and a manager."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from services.incidents import handlers
from services.incidents.api.deps import Person, Service, Supervisor
from services.incidents.schemas import GroupCreate, GroupMembers, GroupRead
from services.incidents.store import Group
from shared.errors import NotFound
from shared.http.audit import audited
from shared.http.clock import Now
from shared.http.etag import IfMatch, etag
from shared.http.pagination import Page, Pagination
from shared.http.problems import problem_responses

router = APIRouter(
    prefix="/api/v1/groups", tags=["assignment groups"], dependencies=[audited("incidents.groups")]
)


def read(group: Group) -> GroupRead:
    return GroupRead(
        name=group.name,
        tier=group.tier,
        members=list(group.members),
        manager=group.manager,
        version=group.version,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 409, 422),
    summary="Create an assignment group (managers and admins)",
)
async def create_group(
    body: GroupCreate, user: Supervisor, incidents: Service, response: Response, now: Now
) -> GroupRead:
    group = Group(body.name, body.tier, tuple(dict.fromkeys(body.members)), body.manager, 1)
    await handlers.add_group(incidents, group, now=now)
    response.headers["Location"] = f"{router.prefix}/{group.name}"
    response.headers["ETag"] = etag(group.version)
    return read(group)


@router.get("", responses=problem_responses(401, 403), summary="List assignment groups")
async def list_groups(user: Person, incidents: Service, page: Pagination) -> Page[GroupRead]:
    groups, total = await incidents.groups.find(
        {}, sort=(("_id", 1),), skip=page.offset, limit=page.limit
    )
    return Page(items=[read(g) for g in groups], total=total, limit=page.limit, offset=page.offset)


@router.get("/{name}", responses=problem_responses(401, 403, 404), summary="Get a group")
async def get_group(name: str, user: Person, incidents: Service) -> GroupRead:
    group = await incidents.groups.get(name)
    if group is None:
        raise NotFound(f"assignment group {name} not found")
    return read(group)


@router.put(
    "/{name}/members",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
    summary="Replace a group's members and manager (managers and admins)",
)
async def set_members(
    name: str,
    body: GroupMembers,
    user: Supervisor,
    incidents: Service,
    response: Response,
    expected: IfMatch,
    now: Now,
) -> GroupRead:
    updated = await handlers.set_group_members(
        incidents, name, tuple(dict.fromkeys(body.members)), body.manager,
        now=now, expected_version=expected,
    )  # fmt: skip
    response.headers["ETag"] = etag(updated.version)
    return read(updated)
