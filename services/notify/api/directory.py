"""The notify directory: how to reach each person (e-mail, webhook, Slack, Teams) and their
quiet hours, and the groups escalation levels name. Managers and admins keep it; a person may
read and set their own entry. Webhook secrets and chat URLs are write-only."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.notify import admin
from services.notify.api.deps import Manager, Service, Staff, manages
from services.notify.api.schemas import GroupInput, GroupRead, PersonInput, PersonRead
from services.notify.documents import Person, WebhookEndpoint
from shared.errors import NotFound
from shared.http.audit import audited
from shared.http.etag import IfMatch, etag
from shared.http.pagination import Page, Pagination
from shared.http.problems import problem_responses

router = APIRouter(
    prefix="/api/v1/notify", tags=["notify: directory"], dependencies=[audited("notify.directory")]
)


@router.put(
    "/people/{user_id}",
    responses=problem_responses(401, 403, 404, 412, 422),
    summary="Set how a person is reached (managers and admins, or the person)",
)
async def put_person(
    user_id: str,
    body: PersonInput,
    user: Staff,
    notify: Service,
    response: Response,
    expected: IfMatch,
) -> PersonRead:
    if not (manages(user) or user.subject == user_id):
        raise NotFound(f"person {user_id} not found")

    def make(version: int) -> Person:
        webhook = body.webhook
        return Person(
            user=user_id,
            version=version,
            name=body.name,
            email=body.email,
            webhook=WebhookEndpoint(webhook.url, webhook.secret, webhook.previous_secret)
            if webhook
            else None,
            slack_url=body.slack_url,
            teams_url=body.teams_url,
            quiet_hours=body.quiet_hours.to_domain() if body.quiet_hours else None,
        )

    person = await admin.put_person(notify, make, user_id, expected=expected)
    response.headers["ETag"] = etag(person.version)
    return PersonRead.of(person)


@router.get(
    "/people/{user_id}",
    responses=problem_responses(401, 403, 404),
    summary="A person's entry (managers and admins, or the person)",
)
async def get_person(user_id: str, user: Staff, notify: Service, response: Response) -> PersonRead:
    person = await notify.people.get(user_id)
    if person is None or not (manages(user) or user.subject == user_id):
        raise NotFound(f"person {user_id} not found")
    response.headers["ETag"] = etag(person.version)
    return PersonRead.of(person)


@router.get("/people", responses=problem_responses(401, 403), summary="The directory")
async def list_people(user: Manager, notify: Service, page: Pagination) -> Page[PersonRead]:
    found, total = await notify.people.find(
        {}, sort=(("_id", 1),), skip=page.offset, limit=page.limit
    )
    return Page(
        items=[PersonRead.of(p) for p in found], total=total, limit=page.limit, offset=page.offset
    )


@router.put(
    "/groups/{name}",
    responses=problem_responses(401, 403, 412, 422),
    summary="Create a group or replace its members (managers and admins)",
)
async def put_group(
    name: str,
    body: GroupInput,
    user: Manager,
    notify: Service,
    response: Response,
    expected: IfMatch,
) -> GroupRead:
    members = tuple(dict.fromkeys(body.members))
    group = await admin.put_group(notify, name, members, expected=expected)
    response.headers["ETag"] = etag(group.version)
    return GroupRead.of(group)


@router.get("/groups", responses=problem_responses(401, 403), summary="List groups")
async def list_groups(user: Staff, notify: Service, page: Pagination) -> Page[GroupRead]:
    found, total = await notify.groups.find(
        {}, sort=(("_id", 1),), skip=page.offset, limit=page.limit
    )
    return Page(
        items=[GroupRead.of(g) for g in found], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/groups/{name}", responses=problem_responses(401, 403, 404), summary="A group")
async def get_group(name: str, user: Staff, notify: Service) -> GroupRead:
    group = await notify.groups.get(name)
    if group is None:
        raise NotFound(f"group {name} not found")
    return GroupRead.of(group)
