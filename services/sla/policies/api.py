"""The policy API: `/api/v1/sla/calendars` and `/api/v1/sla/policies`, versioned CRUD.

POST creates version 1; PUT (If-Match required) and DELETE (retires; If-Match optional) create
the next version; GET reads the latest or `?version=`, `/versions` the history. Managers and
admins write, agents and other staff read, requesters are refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from services.sla.policies import handlers
from services.sla.policies.handlers import PolicyAdmin
from services.sla.policies.model import Status
from services.sla.policies.schemas import (
    CalendarBody,
    CalendarIn,
    CalendarOut,
    PolicyBody,
    PolicyIn,
    PolicyOut,
)
from services.sla.policies.store import CalendarFilter, PolicyFilter
from shared.auth import Principal, Role, require_roles
from shared.contracts.incidents import Priority, TicketType
from shared.contracts.sla_policies import PolicyKind
from shared.http.audit import audited
from shared.http.clock import Now
from shared.http.etag import IfMatch, RequiredIfMatch, etag
from shared.http.pagination import Page, Pagination
from shared.http.problems import problem_responses

BASE = "/api/v1/sla"
router = APIRouter(
    prefix=BASE,
    tags=["sla policies"],
    responses=problem_responses(401, 403, 404, 409, 412, 422, 428),
    dependencies=[audited("sla.policies")],  # policies and calendars: contract terms
)


async def get_admin(request: Request) -> PolicyAdmin:
    admin: PolicyAdmin = request.app.state.sla_policies
    return admin


Admin = Annotated[PolicyAdmin, Depends(get_admin)]
# Policies are contract terms: service-level managers and admins set them, staff read them.
Reader = Annotated[
    Principal, Depends(require_roles(Role.AGENT, Role.CHANGE_MANAGER, Role.MANAGER, Role.ADMIN))
]
Writer = Annotated[Principal, Depends(require_roles(Role.MANAGER, Role.ADMIN))]
Version = Annotated[int | None, Query(ge=1, description="a past version (default: the latest)")]
# Equality filters on names: capped like every other free-text query parameter (422 over it).
Name = Annotated[str | None, Query(max_length=200)]
EffectiveFrom = Annotated[
    datetime | None, Query(description="when the retirement applies (default: now)")
]


def _located(response: Response, path: str, version: int) -> None:
    response.headers["ETag"] = etag(version)
    response.headers["Location"] = path


# -- calendars --------------------------------------------------------------------------------


@router.post("/calendars", status_code=status.HTTP_201_CREATED, summary="Create a calendar")
async def create_calendar(
    body: CalendarIn, user: Writer, admin: Admin, now: Now, response: Response
) -> CalendarOut:
    created = await handlers.create_calendar(
        admin, body.id, body.spec(), effective_from=body.effective_from, actor=user.subject,
        now=now,
    )  # fmt: skip
    _located(response, f"{BASE}/calendars/{created.id}", created.version)
    return CalendarOut.of(created)


@router.get("/calendars", summary="List calendars (latest versions)")
async def list_calendars(
    user: Reader, admin: Admin, page: Pagination, status: Status | None = None
) -> Page[CalendarOut]:
    found, total = await handlers.list_calendars(
        admin, CalendarFilter(status), limit=page.limit, offset=page.offset
    )
    items = [CalendarOut.of(c) for c in found]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/calendars/{calendar_id}", summary="A calendar: the latest or a given version")
async def get_calendar(
    calendar_id: str, user: Reader, admin: Admin, response: Response, version: Version = None
) -> CalendarOut:
    found = await handlers.calendar(admin, calendar_id, version)
    latest = found if version is None else await handlers.calendar(admin, calendar_id)
    response.headers["ETag"] = etag(latest.version)
    return CalendarOut.of(found)


@router.get("/calendars/{calendar_id}/versions", summary="Every version of a calendar")
async def calendar_versions(
    calendar_id: str, user: Reader, admin: Admin, page: Pagination
) -> Page[CalendarOut]:
    history = await handlers.calendar_history(admin, calendar_id)
    items = [CalendarOut.of(c) for c in history[page.offset : page.offset + page.limit]]
    return Page(items=items, total=len(history), limit=page.limit, offset=page.offset)


@router.put("/calendars/{calendar_id}", summary="Create the next version of a calendar")
async def revise_calendar(
    calendar_id: str, user: Writer, body: CalendarBody, expected: RequiredIfMatch,
    admin: Admin, now: Now, response: Response,
) -> CalendarOut:  # fmt: skip
    revised = await handlers.revise_calendar(
        admin, calendar_id, body.spec(), effective_from=body.effective_from,
        expected_version=expected, actor=user.subject, now=now,
    )  # fmt: skip
    response.headers["ETag"] = etag(revised.version)
    return CalendarOut.of(revised)


@router.delete("/calendars/{calendar_id}", summary="Retire a calendar (a new, final version)")
async def retire_calendar(
    calendar_id: str, user: Writer, expected: IfMatch, admin: Admin, now: Now,
    response: Response, effective_from: EffectiveFrom = None,
) -> CalendarOut:  # fmt: skip
    retired = await handlers.retire_calendar(
        admin, calendar_id, effective_from=effective_from, expected_version=expected,
        actor=user.subject, now=now,
    )  # fmt: skip
    response.headers["ETag"] = etag(retired.version)
    return CalendarOut.of(retired)


# -- policies ---------------------------------------------------------------------------------


@router.post("/policies", status_code=status.HTTP_201_CREATED, summary="Create an SLA/OLA policy")
async def create_policy(
    body: PolicyIn, user: Writer, admin: Admin, now: Now, response: Response
) -> PolicyOut:
    created = await handlers.create_policy(
        admin, body.id, body.spec(), effective_from=body.effective_from, actor=user.subject,
        now=now,
    )  # fmt: skip
    _located(response, f"{BASE}/policies/{created.id}", created.version)
    return PolicyOut.of(created)


@router.get("/policies", summary="List policies (latest versions), filtered")
async def list_policies(
    user: Reader, admin: Admin, page: Pagination, kind: PolicyKind | None = None,
    ticket_type: TicketType | None = None, priority: Priority | None = None,
    service: Name = None, group: Name = None, calendar_id: Name = None,
    status: Status | None = None,
) -> Page[PolicyOut]:  # fmt: skip
    filters = PolicyFilter(kind, ticket_type, priority, service, group, calendar_id, status)
    found, total = await handlers.list_policies(
        admin, filters, limit=page.limit, offset=page.offset
    )
    items = [PolicyOut.of(p) for p in found]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/policies/{policy_id}", summary="A policy: the latest or a given version")
async def get_policy(
    policy_id: str, user: Reader, admin: Admin, response: Response, version: Version = None
) -> PolicyOut:
    found = await handlers.policy(admin, policy_id, version)
    latest = found if version is None else await handlers.policy(admin, policy_id)
    response.headers["ETag"] = etag(latest.version)
    return PolicyOut.of(found)


@router.get("/policies/{policy_id}/versions", summary="Every version of a policy")
async def policy_versions(
    policy_id: str, user: Reader, admin: Admin, page: Pagination
) -> Page[PolicyOut]:
    history = await handlers.policy_history(admin, policy_id)
    items = [PolicyOut.of(p) for p in history[page.offset : page.offset + page.limit]]
    return Page(items=items, total=len(history), limit=page.limit, offset=page.offset)


@router.put("/policies/{policy_id}", summary="Create the next version of a policy")
async def revise_policy(
    policy_id: str, user: Writer, body: PolicyBody, expected: RequiredIfMatch, admin: Admin,
    now: Now, response: Response,
) -> PolicyOut:  # fmt: skip
    revised = await handlers.revise_policy(
        admin, policy_id, body.spec(), effective_from=body.effective_from,
        expected_version=expected, actor=user.subject, now=now,
    )  # fmt: skip
    response.headers["ETag"] = etag(revised.version)
    return PolicyOut.of(revised)


@router.delete("/policies/{policy_id}", summary="Retire a policy (a new, final version)")
async def retire_policy(
    policy_id: str, user: Writer, expected: IfMatch, admin: Admin, now: Now,
    response: Response, effective_from: EffectiveFrom = None,
) -> PolicyOut:  # fmt: skip
    retired = await handlers.retire_policy(
        admin, policy_id, effective_from=effective_from, expected_version=expected,
        actor=user.subject, now=now,
    )  # fmt: skip
    response.headers["ETag"] = etag(retired.version)
    return PolicyOut.of(retired)


routers = [router]
