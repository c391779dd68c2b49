"""Escalations by ticket, acknowledgement, and the delivery log by ticket.

Agents see (and may acknowledge) the escalations they were paged for, and their own deliveries;
managers and admins see everything. Someone else's escalation answers 404, as if it did not
exist."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.notify.api.deps import Service, Staff, manages
from services.notify.api.records import AwaitingEscalationRead, DeliveryRead, EscalationRead
from services.notify.domain.escalation import Escalation
from services.notify.handlers import acknowledge, awaiting_acknowledgement, find_escalation
from shared.auth import Principal
from shared.errors import Forbidden, NotFound
from shared.http.clock import Now
from shared.http.pagination import Page, Pagination
from shared.http.problems import problem_responses

router = APIRouter(prefix="/api/v1/notify", tags=["notify: escalations and deliveries"])
TicketId = Annotated[str, Query(min_length=1, max_length=200, description="The ticket id")]


def may_see(user: Principal, escalation: Escalation) -> bool:
    return manages(user) or user.subject in escalation.notified


@router.get(
    "/escalations",
    responses=problem_responses(401, 403, 422),
    summary="A ticket's escalations (those you were paged for, or all for managers)",
)
async def ticket_escalations(
    ticket_id: TicketId, user: Staff, notify: Service
) -> list[EscalationRead]:
    stored = await notify.escalations.get(ticket_id)
    escalations = stored.book.escalations if stored else ()
    return [EscalationRead.of(e) for e in escalations if may_see(user, e)]


def paged_whom(user: Principal, paged: str | None) -> str | None:
    """Whose list: `me` or your own name, yours; omitted, yours (managers: everyone's);
    another person's, managers only."""
    if paged in (None, "") and manages(user):
        return None
    if paged in (None, "", "me", user.subject):
        return user.subject
    if not manages(user):
        raise Forbidden("only managers may list the escalations that paged someone else")
    return paged


@router.get(
    "/escalations/pending",
    responses=problem_responses(401, 403, 422),
    summary="Escalations waiting for acknowledgement that paged you (managers: anyone's)",
)
async def pending_escalations(
    user: Staff,
    notify: Service,
    page: Pagination,
    paged: Annotated[
        str | None,
        Query(
            max_length=200,
            description="`me` (the default for staff), or a user name (managers; omitted: "
            "everyone's for managers)",
        ),
    ] = None,
) -> Page[AwaitingEscalationRead]:
    found, total = await awaiting_acknowledgement(
        notify, paged_whom(user, paged), limit=page.limit, offset=page.offset
    )
    return Page(
        items=[AwaitingEscalationRead.with_ticket(e, view) for e, view in found],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/escalations/{escalation_id}",
    responses=problem_responses(401, 403, 404),
    summary="An escalation",
)
async def get_escalation(escalation_id: str, user: Staff, notify: Service) -> EscalationRead:
    escalation = await find_escalation(notify, escalation_id)
    if not may_see(user, escalation):
        raise NotFound(f"escalation {escalation_id} not found")
    return EscalationRead.of(escalation)


@router.post(
    "/escalations/{escalation_id}/acknowledgement",
    responses=problem_responses(401, 403, 404, 409),
    summary="Take the escalation: no further level fires",
)
async def acknowledge_escalation(
    escalation_id: str, user: Staff, notify: Service, now: Now
) -> EscalationRead:
    escalation = await find_escalation(notify, escalation_id)
    if not may_see(user, escalation):
        raise NotFound(f"escalation {escalation_id} not found")
    acknowledged = await acknowledge(notify, escalation_id, by=user.subject, via="api", now=now)
    return EscalationRead.of(acknowledged)


@router.get(
    "/deliveries",
    responses=problem_responses(401, 403, 422),
    summary="The delivery log of a ticket (yours, or all for managers)",
)
async def ticket_deliveries(
    ticket_id: TicketId, user: Staff, notify: Service, page: Pagination
) -> Page[DeliveryRead]:
    recipient = None if manages(user) else user.subject
    found, total = await notify.deliveries.of_ticket(
        ticket_id, recipient=recipient, skip=page.offset, limit=page.limit
    )
    return Page(
        items=[DeliveryRead.of(r) for r in found],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )
