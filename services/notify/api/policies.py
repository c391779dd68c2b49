"""Escalation policies: versioned. A PUT is the next version, a DELETE a disabled version;
running escalations keep the version they started with."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from services.notify import admin
from services.notify.api.deps import Manager, Service, Staff
from services.notify.api.schemas import PolicyCreate, PolicyInput, PolicyRead
from shared.errors import NotFound
from shared.http.audit import audited
from shared.http.clock import Now
from shared.http.etag import IfMatch, etag
from shared.http.pagination import Page, Pagination
from shared.http.problems import problem_responses

router = APIRouter(
    prefix="/api/v1/notify/policies",
    tags=["notify: escalation policies"],
    dependencies=[audited("notify.policies")],
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 409, 422),
    summary="Create an escalation policy (managers and admins)",
)
async def create_policy(
    body: PolicyCreate, user: Manager, notify: Service, now: Now, response: Response
) -> PolicyRead:
    policy = await admin.create_policy(notify, body.to_policy(body.id, 1), by=user.subject, now=now)
    response.headers["Location"] = f"{router.prefix}/{policy.id}"
    response.headers["ETag"] = etag(policy.version)
    return PolicyRead.of(policy)


@router.get("", responses=problem_responses(401, 403), summary="The policies in force")
async def list_policies(user: Staff, notify: Service, page: Pagination) -> Page[PolicyRead]:
    current = sorted((await notify.policies.catalog()).current(), key=lambda p: p.id)
    items = [PolicyRead.of(p) for p in current[page.offset : page.offset + page.limit]]
    return Page(items=items, total=len(current), limit=page.limit, offset=page.offset)


@router.get(
    "/{policy_id}", responses=problem_responses(401, 403, 404), summary="A policy's latest version"
)
async def get_policy(
    policy_id: str, user: Staff, notify: Service, response: Response
) -> PolicyRead:
    policy = await admin.latest_policy(notify, policy_id)
    response.headers["ETag"] = etag(policy.version)
    return PolicyRead.of(policy)


@router.get(
    "/{policy_id}/versions/{version}",
    responses=problem_responses(401, 403, 404),
    summary="One version of a policy (what a running escalation follows)",
)
async def get_policy_version(
    policy_id: str, version: int, user: Staff, notify: Service
) -> PolicyRead:
    for policy in admin.versions_of((await notify.policies.catalog()).policies, policy_id):
        if policy.version == version:
            return PolicyRead.of(policy)
    raise NotFound(f"escalation policy {policy_id} has no version {version}")


@router.put(
    "/{policy_id}",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
    summary="Save the next version of a policy (managers and admins)",
)
async def update_policy(
    policy_id: str,
    body: PolicyInput,
    user: Manager,
    notify: Service,
    now: Now,
    response: Response,
    expected: IfMatch,
) -> PolicyRead:
    policy = await admin.new_policy_version(
        notify,
        policy_id,
        lambda version: body.to_policy(policy_id, version),
        expected=expected,
        by=user.subject,
        now=now,
    )
    response.headers["ETag"] = etag(policy.version)
    return PolicyRead.of(policy)


@router.delete(
    "/{policy_id}",
    responses=problem_responses(401, 403, 404, 412),
    summary="Retire a policy: a disabled next version (managers and admins)",
)
async def retire_policy(
    policy_id: str, user: Manager, notify: Service, now: Now, expected: IfMatch
) -> PolicyRead:
    policy = await admin.retire_policy(
        notify, policy_id, expected=expected, by=user.subject, now=now
    )
    return PolicyRead.of(policy)
