"""On-call rotations: weekly turns with a local handoff time, overrides, and who is on call."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from services.notify import admin
from services.notify.api.deps import Manager, Service, Staff
from services.notify.api.schemas import (
    OnCallRead,
    OverrideModel,
    RotationCreate,
    RotationInput,
    RotationRead,
)
from services.notify.domain.rotations import Override, on_call
from shared.errors import Invalid
from shared.http.audit import audited
from shared.http.clock import Now
from shared.http.etag import IfMatch, etag
from shared.http.pagination import Page, Pagination
from shared.http.problems import problem_responses


async def override_cap(request: Request) -> int:
    """ITSM_NOTIFY_MAX_ROTATION_OVERRIDES: a rotation's overrides that may be still to end."""
    cap: int = request.app.state.notify_override_cap
    return cap


router = APIRouter(
    prefix="/api/v1/notify/rotations",
    tags=["notify: on-call rotations"],
    dependencies=[audited("notify.rotations")],
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 409, 422),
    summary="Create a rotation (managers and admins)",
)
async def create_rotation(
    body: RotationCreate, user: Manager, notify: Service, response: Response
) -> RotationRead:
    stored = await admin.create_rotation(notify, lambda: body.to_rotation(body.id))
    response.headers["Location"] = f"{router.prefix}/{body.id}"
    response.headers["ETag"] = etag(stored.version)
    return RotationRead.of(stored.rotation, stored.version)


@router.get("", responses=problem_responses(401, 403), summary="List rotations")
async def list_rotations(user: Staff, notify: Service, page: Pagination) -> Page[RotationRead]:
    found, total = await notify.rotations.find(
        {}, sort=(("_id", 1),), skip=page.offset, limit=page.limit
    )
    items = [RotationRead.of(s.rotation, s.version) for s in found]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/{rotation_id}", responses=problem_responses(401, 403, 404), summary="A rotation")
async def get_rotation(
    rotation_id: str, user: Staff, notify: Service, response: Response
) -> RotationRead:
    stored = await admin.get_rotation(notify, rotation_id)
    response.headers["ETag"] = etag(stored.version)
    return RotationRead.of(stored.rotation, stored.version)


@router.put(
    "/{rotation_id}",
    responses=problem_responses(401, 403, 404, 412, 422),
    summary="Replace a rotation's schedule, keeping its overrides (managers and admins)",
)
async def replace_rotation(
    rotation_id: str,
    body: RotationInput,
    user: Manager,
    notify: Service,
    response: Response,
    expected: IfMatch,
) -> RotationRead:
    stored = await admin.change_rotation(
        notify,
        rotation_id,
        lambda r: body.to_rotation(rotation_id, r.overrides),
        expected=expected,
    )
    response.headers["ETag"] = etag(stored.version)
    return RotationRead.of(stored.rotation, stored.version)


@router.post(
    "/{rotation_id}/overrides",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 404, 409, 412, 422),
    summary="Put someone else on call for a time range (managers and admins)",
    description="At most `max_rotation_overrides` (200 by default) of a rotation's overrides "
    "may be still to end: one more is refused with 409, naming the cap.",
)
async def add_override(
    rotation_id: str,
    body: OverrideModel,
    user: Manager,
    notify: Service,
    response: Response,
    expected: IfMatch,
    now: Now,
    cap: Annotated[int, Depends(override_cap)],
) -> RotationRead:
    stored = await admin.add_override(
        notify, rotation_id, Override(body.user, body.start, body.end), expected=expected,
        now=now, cap=cap,
    )  # fmt: skip
    response.headers["ETag"] = etag(stored.version)
    return RotationRead.of(stored.rotation, stored.version)


@router.get(
    "/{rotation_id}/on-call",
    responses=problem_responses(401, 403, 404, 422),
    summary="Who is on call now, or at `at`",
)
async def who_is_on_call(
    rotation_id: str,
    user: Staff,
    notify: Service,
    now: Now,
    at: Annotated[datetime | None, Query(description="An instant with a UTC offset")] = None,
) -> OnCallRead:
    if at is not None and at.tzinfo is None:
        raise Invalid("`at` needs a UTC offset, e.g. 2026-03-16T09:00:00Z")
    instant = at or now
    stored = await admin.get_rotation(notify, rotation_id)
    return OnCallRead.of(rotation_id, instant, on_call(stored.rotation, instant))
