"""One endpoint per incident action. Each answers the updated incident with its ETag; If-Match is
optional (a stale one gets 412); a forbidden transition gets 409 naming the allowed next states."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.incidents import domain, handlers
from services.incidents.api.deps import Scope, Service, with_etag
from services.incidents.domain import Incident
from services.incidents.schemas import (
    Assignment,
    FunctionalEscalation,
    Hold,
    IncidentRead,
    Justification,
    ManagerEscalation,
    Message,
    ParentLink,
    Rating,
    Reclassification,
    Resolution,
    WatchersChange,
)
from shared.http.clock import Now
from shared.http.etag import IfMatch
from shared.http.problems import problem_responses

router = APIRouter(
    prefix="/api/v1/incidents/{incident_id}",
    tags=["incident actions"],
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)


def answer(response: Response, incident: Incident) -> IncidentRead:
    with_etag(response, incident)
    return IncidentRead.of(incident)


@router.post("/classification", summary="Change impact and urgency (priority), with a reason")
async def reclassify(
    incident_id: str, body: Reclassification, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    policy = incidents.policy
    incident = await handlers.act(
        incidents, scope, incident_id,
        lambda i: domain.reprioritize(
            i, impact=body.impact, urgency=body.urgency, reason=body.reason,
            actor=scope.subject, now=now, policy=policy,
        ),
        now=now, allowed=handlers.staff, expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/assignment", summary="Assign to a group (and optionally an agent in it)")
async def assign(
    incident_id: str, body: Assignment, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.assign(
        incidents, scope, incident_id, group=body.group, assignee=body.assignee,
        reason=body.reason, now=now, expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/escalation", summary="Functional escalation to a group of the next tier")
async def escalate(
    incident_id: str, body: FunctionalEscalation, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.escalate(
        incidents, scope, incident_id, to_group=body.to_group, reason=body.reason, now=now,
        expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/manager-escalation", summary="Hierarchical escalation to a manager")
async def escalate_to_manager(
    incident_id: str, body: ManagerEscalation, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.escalate_to_manager(
        incidents, scope, incident_id, manager=body.manager, reason=body.reason, now=now,
        expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/start", summary="Start work (in progress)")
async def start(
    incident_id: str, scope: Scope, incidents: Service, now: Now, response: Response,
    expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.act(
        incidents, scope, incident_id, lambda i: domain.start_work(i, actor=scope.subject, now=now),
        now=now, allowed=handlers.staff, expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/hold", summary="Put on hold: awaiting requester, vendor or change (SLA pauses)")
async def hold(
    incident_id: str, body: Hold, scope: Scope, incidents: Service, now: Now, response: Response,
    expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.act(
        incidents, scope, incident_id,
        lambda i: domain.put_on_hold(
            i, body.reason, actor=scope.subject, now=now, reason=body.note
        ),
        now=now, allowed=handlers.staff, expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/resume", summary="Resume work after a hold")
async def resume(
    incident_id: str, scope: Scope, incidents: Service, now: Now, response: Response,
    expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.act(
        incidents, scope, incident_id, lambda i: domain.resume(i, actor=scope.subject, now=now),
        now=now, allowed=handlers.staff, expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/replies", summary="Public reply (the first by staff is the first response)")
async def reply(
    incident_id: str, body: Message, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.act(
        incidents, scope, incident_id,
        lambda i: domain.reply(
            i, body.body, actor=scope.subject, by_staff=scope.can_work(i), now=now
        ),
        now=now, allowed=handlers.owner_or_staff, expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/work-notes", summary="Internal work note (staff only)")
async def work_note(
    incident_id: str, body: Message, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.act(
        incidents, scope, incident_id,
        lambda i: domain.add_work_note(i, body.body, actor=scope.subject, now=now),
        now=now, allowed=handlers.staff, expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/watchers", summary="Add or remove watchers")
async def watchers(
    incident_id: str, body: WatchersChange, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.act(
        incidents, scope, incident_id,
        lambda i: domain.change_watchers(
            i, add=body.add, remove=body.remove, actor=scope.subject, now=now
        ),
        now=now, allowed=handlers.owner_or_staff, expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/major", summary="Promote to a major incident, with a reason")
async def declare_major(
    incident_id: str, body: Justification, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.act(
        incidents, scope, incident_id,
        lambda i: domain.declare_major(i, reason=body.reason, actor=scope.subject, now=now),
        now=now, allowed=handlers.staff, expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/parent", summary="Make this incident a child of another (resolved with it)")
async def link_parent(
    incident_id: str, body: ParentLink, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.link_to_parent(
        incidents, scope, incident_id, parent_id=body.parent_id, now=now,
        expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/resolve", summary="Resolve, with a resolution code and notes")
async def resolve(
    incident_id: str, body: Resolution, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.act(
        incidents, scope, incident_id,
        lambda i: domain.resolve(i, code=body.code, notes=body.notes, actor=scope.subject, now=now),
        now=now, allowed=handlers.staff, expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/close", summary="Close: the requester confirms the resolution")
async def close(
    incident_id: str, scope: Scope, incidents: Service, now: Now, response: Response,
    expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.close(
        incidents, scope, incident_id, now=now, expected_version=expected
    )
    return answer(response, incident)


@router.post("/reopen", summary="Reopen a resolved incident within the reopen window")
async def reopen(
    incident_id: str, body: Justification, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    policy = incidents.policy
    incident = await handlers.act(
        incidents, scope, incident_id,
        lambda i: domain.reopen(i, reason=body.reason, actor=scope.subject, now=now, policy=policy),
        now=now, allowed=handlers.owner_or_staff, expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/cancel", summary="Cancel (staff; a requester only while it is new)")
async def cancel(
    incident_id: str, body: Justification, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.act(
        incidents, scope, incident_id,
        lambda i: domain.cancel(i, reason=body.reason, actor=scope.subject, now=now),
        now=now, allowed=handlers.may_cancel, expected_version=expected,
    )  # fmt: skip
    return answer(response, incident)


@router.post("/rating", summary="Customer satisfaction (1-5), once, by the requester")
async def rate(
    incident_id: str, body: Rating, scope: Scope, incidents: Service, now: Now,
    response: Response, expected: IfMatch,
) -> IncidentRead:  # fmt: skip
    incident = await handlers.act(
        incidents, scope, incident_id,
        lambda i: domain.rate(
            i, score=body.score, comment=body.comment, actor=scope.subject, now=now
        ),
        now=now, allowed=handlers.owner, expected_version=expected,
        denial="only the requester may rate an incident",
    )  # fmt: skip
    return answer(response, incident)
