"""Where a notification goes and what it says: the recipient's target on its channel (from
the directory), the circuit breaker's endpoint, and the rendered message with its signed
acknowledgement link. No sending here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.notify.channels import (
    EmailTarget,
    Kind,
    Message,
    Notice,
    SlackTarget,
    TeamsTarget,
    Templates,
    WebhookTarget,
)
from services.notify.channels.base import endpoint_host
from services.notify.documents import Person
from services.notify.domain.acklinks import AckClaim, create_token
from services.notify.domain.escalation import Escalation
from services.notify.domain.model import Notification
from services.notify.domain.triggers import TicketView
from shared.ids import uuid7

ACK_PATH = "/api/v1/notify/ack/"
SUBSCRIPTION_KINDS = {
    "p1_opened": Kind.INCIDENT_P1_OPENED,
    "major_declared": Kind.INCIDENT_MAJOR_DECLARED,
    "assigned_to_me": Kind.INCIDENT_ASSIGNED_TO_YOU,
}


class Unreachable(Exception):
    """The recipient has no target on the channel (permanent: fix the directory)."""


@dataclass(frozen=True)
class Route:
    target: Any  # EmailTarget | WebhookTarget | SlackTarget | TeamsTarget
    destination: str  # for the log: an address or a host, never a secret
    endpoint: str  # the circuit breaker's key


def route(notification: Notification, person: Person | None, smtp_endpoint: str) -> Route:
    who = notification.recipient
    if person is None:
        raise Unreachable(f"{who} is not in the notify directory")
    channel = notification.channel
    if channel == "email" and person.email:
        return Route(EmailTarget(person.email, person.name), person.email, smtp_endpoint)
    if channel == "webhook" and person.webhook:
        host = endpoint_host(person.webhook.url)
        hook = person.webhook
        return Route(WebhookTarget(hook.url, hook.secret, hook.previous_secret), host, host)
    if channel == "slack" and person.slack_url:
        host = endpoint_host(person.slack_url)
        return Route(SlackTarget(person.slack_url), host, host)
    if channel == "teams" and person.teams_url:
        host = endpoint_host(person.teams_url)
        return Route(TeamsTarget(person.teams_url), host, host)
    raise Unreachable(f"{who} has no {channel} target in the notify directory")


@dataclass(frozen=True)
class Links:
    """Ticket links and signed acknowledgement links in messages."""

    base_url: str
    ticket_path: str  # "/api/v1/incidents/{ticket_id}"
    keys: Sequence[bytes] = field(repr=False)  # the first signs; all verify
    ttl: timedelta

    def ticket(self, ticket_id: str) -> str:
        return self.base_url.rstrip("/") + self.ticket_path.format(ticket_id=ticket_id)

    def ack(self, escalation_id: str, recipient: str, now: datetime) -> str:
        expires = (now + self.ttl).replace(microsecond=0)
        claim = AckClaim(uuid7(), escalation_id, recipient, expires)
        return self.base_url.rstrip("/") + self.ack_path(create_token(claim, self.keys[0]))

    def ack_path(self, token: str) -> str:
        return ACK_PATH + token


def notice(
    notification: Notification,
    view: TicketView | None,
    escalation: Escalation | None,
    links: Links,
    person: Person | None,
    now: datetime,
) -> Notice:
    """What the template of this notification needs to know."""
    ticket = notification.ticket_id
    common: dict[str, Any] = {
        "dedup_key": notification.key,
        "ticket_id": ticket,
        "ticket_number": (view.number if view else None) or ticket,
        "title": (view.title if view else None) or "(title not known to notify yet)",
        "priority": notification.priority,
        "ticket_url": links.ticket(ticket),
        "recipient_name": person.name if person else None,
        "group": view.group if view else None,
        "assignee": view.assignee if view else None,
        "service": view.service if view else None,
    }
    if notification.reason == "escalation":
        ack = None
        if escalation is not None and (escalation.running or escalation.status == "exhausted"):
            ack = links.ack(escalation.id, notification.recipient, now)
        return Notice(
            kind=Kind.ESCALATION_LEVEL,
            level=notification.level or 1,
            unacknowledged_since=escalation.started_at if escalation else None,
            ack_url=ack,
            **common,
        )
    kind = SUBSCRIPTION_KINDS[notification.subscription or "p1_opened"]
    if kind is Kind.INCIDENT_ASSIGNED_TO_YOU and common["group"] is None:
        common["group"] = "(unknown group)"
    return Notice(kind=kind, **common)


def render(templates: Templates, notice_: Notice, now: datetime) -> Message:
    return templates.render(notice_, now=now)
