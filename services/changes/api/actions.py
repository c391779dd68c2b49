"""One endpoint per change action; each answers the updated change with its ETag."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.changes import handlers
from services.changes.api.deps import Scope, Service, with_etag
from services.changes.domain import actions
from services.changes.domain.model import Change
from services.changes.schemas import (
    ChangeRead,
    Completion,
    Decision,
    Delegation,
    Justification,
    ReviewIn,
)
from shared.http.audit import audited
from shared.http.clock import Now
from shared.http.etag import IfMatch
from shared.http.problems import problem_responses

router = APIRouter(
    prefix="/api/v1/changes/{change_id}",
    tags=["change actions"],
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)


def answer(response: Response, change: Change) -> ChangeRead:
    with_etag(response, change)
    return ChangeRead.of(change)


@router.post("/submit", summary="Submit for assessment (a standard change is scheduled at once)")
async def submit(
    change_id: str, scope: Scope, changes: Service, now: Now, response: Response, expected: IfMatch
) -> ChangeRead:
    change = await handlers.submit(changes, scope, change_id, now=now, expected_version=expected)
    return answer(response, change)


APPROVALS = [audited("changes.approvals")]


@router.post(
    "/assessment",
    summary="Assess risk and set the required approvals (change manager)",
    dependencies=APPROVALS,
)
async def assess(
    change_id: str, scope: Scope, changes: Service, now: Now, response: Response, expected: IfMatch
) -> ChangeRead:
    change = await handlers.assess(changes, scope, change_id, now=now, expected_version=expected)
    return answer(response, change)


@router.post(
    "/approvals",
    summary="Approve or reject (a rejection returns it to draft)",
    dependencies=APPROVALS,
)
async def decide(
    change_id: str, body: Decision, scope: Scope, changes: Service, now: Now,
    response: Response, expected: IfMatch,
) -> ChangeRead:  # fmt: skip
    change = await handlers.decide(
        changes, scope, change_id, body.decision, comment=body.comment, now=now,
        expected_version=expected,
    )  # fmt: skip
    return answer(response, change)


@router.post(
    "/delegations", summary="Delegate your approval to someone else", dependencies=APPROVALS
)
async def delegate(
    change_id: str, body: Delegation, scope: Scope, changes: Service, now: Now,
    response: Response, expected: IfMatch,
) -> ChangeRead:  # fmt: skip
    change = await handlers.act(
        changes, scope, change_id,
        lambda c: actions.delegate(c, approver=scope.subject, to=body.to, now=now),
        allowed=handlers.anyone_who_sees, now=now, expected_version=expected, denial="",
    )  # fmt: skip
    return answer(response, change)


@router.post("/start", summary="Start implementing (implementer or change manager)")
async def start(
    change_id: str, scope: Scope, changes: Service, now: Now, response: Response, expected: IfMatch
) -> ChangeRead:
    change = await handlers.act(
        changes, scope, change_id, lambda c: actions.start(c, actor=scope.subject, now=now),
        allowed=handlers.implementer, now=now, expected_version=expected,
        denial="only the implementer or a change manager starts a change",
    )  # fmt: skip
    return answer(response, change)


@router.post("/complete", summary="Complete with an outcome and the actual times")
async def complete(
    change_id: str, body: Completion, scope: Scope, changes: Service, now: Now,
    response: Response, expected: IfMatch,
) -> ChangeRead:  # fmt: skip
    change = await handlers.act(
        changes, scope, change_id,
        lambda c: actions.complete(
            c, body.outcome, actor=scope.subject, now=now, actual_start=body.actual_start,
            actual_end=body.actual_end,
        ),
        allowed=handlers.implementer, now=now, expected_version=expected,
        denial="only the implementer or a change manager completes a change",
    )  # fmt: skip
    return answer(response, change)


@router.post("/review", summary="Post-implementation review")
async def review(
    change_id: str, body: ReviewIn, scope: Scope, changes: Service, now: Now,
    response: Response, expected: IfMatch,
) -> ChangeRead:  # fmt: skip
    change = await handlers.act(
        changes, scope, change_id,
        lambda c: actions.review(
            c, summary=body.summary, lessons=body.lessons, actor=scope.subject, now=now
        ),
        allowed=handlers.implementer, now=now, expected_version=expected,
        denial="only the implementer or a change manager reviews a change",
    )  # fmt: skip
    return answer(response, change)


@router.post("/close", summary="Close (a required review must be done first)")
async def close(
    change_id: str, scope: Scope, changes: Service, now: Now, response: Response, expected: IfMatch
) -> ChangeRead:
    change = await handlers.act(
        changes, scope, change_id, lambda c: actions.close(c, actor=scope.subject, now=now),
        allowed=handlers.manager, now=now, expected_version=expected,
        denial="only a change manager closes a change",
    )  # fmt: skip
    return answer(response, change)


@router.post("/cancel", summary="Cancel (requester or change manager)")
async def cancel(
    change_id: str, body: Justification, scope: Scope, changes: Service, now: Now,
    response: Response, expected: IfMatch,
) -> ChangeRead:  # fmt: skip
    change = await handlers.act(
        changes, scope, change_id,
        lambda c: actions.cancel(c, reason=body.reason, actor=scope.subject, now=now),
        allowed=handlers.requester_or_manager, now=now, expected_version=expected,
        denial="only the requester or a change manager cancels a change",
    )  # fmt: skip
    return answer(response, change)


@router.post("/decline", summary="Reject for good (change manager)")
async def decline(
    change_id: str, body: Justification, scope: Scope, changes: Service, now: Now,
    response: Response, expected: IfMatch,
) -> ChangeRead:  # fmt: skip
    change = await handlers.act(
        changes, scope, change_id,
        lambda c: actions.decline(c, reason=body.reason, actor=scope.subject, now=now),
        allowed=handlers.manager, now=now, expected_version=expected,
        denial="only a change manager declines a change",
    )  # fmt: skip
    return answer(response, change)
