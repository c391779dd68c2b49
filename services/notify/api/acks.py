"""The acknowledgement link in a message: `…/api/v1/notify/ack/<token>`.

The signed token is the authentication: its signature, expiry and single use are checked. A
GET only shows a confirmation page (mail scanners and link previews fetch links: they must not
acknowledge anything); the page's button POSTs, which acknowledges once."""

from __future__ import annotations

from html import escape
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from services.notify.api.deps import AckLinks, Service
from services.notify.api.records import EscalationRead
from services.notify.domain.acklinks import AckClaim, InvalidAckLink, verify_token
from services.notify.handlers import acknowledge, find_escalation
from services.notify.routing import Links
from shared.http.clock import Now
from shared.http.problems import Problem, problem_responses

router = APIRouter(prefix="/api/v1/notify/ack", tags=["notify: acknowledgement links"])
Token = Annotated[str, Path(min_length=1, max_length=2048)]
REFUSALS = {
    "malformed": (400, "Invalid acknowledgement link"),
    "bad_signature": (403, "Invalid acknowledgement link"),
    "expired": (410, "Acknowledgement link expired"),
}


def verified(token: str, links: Links, now: Now) -> AckClaim:
    try:
        return verify_token(token, links.keys, now)
    except InvalidAckLink as exc:
        status, title = REFUSALS[exc.reason]
        raise Problem(status, title, str(exc), reason=exc.reason) from None


@router.get(
    "/{token}",
    response_class=HTMLResponse,
    responses=problem_responses(400, 403, 404, 410),
    summary="Confirm an acknowledgement (no login: the signed link is the credential)",
)
async def confirm_page(token: Token, notify: Service, links: AckLinks, now: Now) -> HTMLResponse:
    claim = verified(token, links, now)
    escalation = await find_escalation(notify, claim.escalation_id)
    ticket = escape(escalation.trigger.ticket_id)
    page = (
        "<!doctype html><meta charset='utf-8'><title>Acknowledge escalation</title>"
        f"<p>Acknowledge the escalation of ticket <strong>{ticket}</strong> as "
        f"<strong>{escape(claim.recipient)}</strong>? No further level will be paged.</p>"
        f"<form method='post' action='{escape(links.ack_path(token))}'>"
        "<button type='submit'>Acknowledge</button></form>"
    )
    return HTMLResponse(page)


@router.post(
    "/{token}",
    responses=problem_responses(400, 403, 404, 409, 410),
    summary="Acknowledge through a signed single-use link",
)
async def acknowledge_by_link(
    token: Token, notify: Service, links: AckLinks, now: Now
) -> EscalationRead:
    claim = verified(token, links, now)
    await find_escalation(notify, claim.escalation_id)  # 404 before the token is spent
    used = await notify.tokens.use(
        claim.token_id, expires_at=claim.expires_at, by=claim.recipient, at=now
    )
    if not used:
        raise Problem(
            409,
            "Acknowledgement link used",
            "this acknowledgement link was used already",
            reason="used",
        )
    escalation = await acknowledge(
        notify, claim.escalation_id, by=claim.recipient, via="link", now=now
    )
    return EscalationRead.of(escalation)
