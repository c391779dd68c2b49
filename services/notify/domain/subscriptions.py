"""Personal subscriptions to key incident events, beside the escalation policies:

- `p1_opened`: an incident was recorded as P1, or raised to P1;
- `major_declared`: a major incident was declared;
- `assigned_to_me`: an incident was assigned to the subscriber (not when they took it
  themselves).

Nobody is told about what they did themselves. A subscription may narrow to services. Each
match is one notification per channel, with the same dedup key for a redelivered event, and the
subscriber's quiet hours apply (a P1 goes through at once).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from services.notify.domain.clock import as_utc
from services.notify.domain.delivery import dedup_key
from services.notify.domain.model import CHANNELS, Channel, Notification
from services.notify.domain.quiet_hours import apply_quiet_hours
from services.notify.domain.recipients import Directory
from services.notify.domain.triggers import TicketView
from shared.contracts.incidents import (
    IncidentAssigned,
    IncidentCreated,
    IncidentEvent,
    IncidentMajorDeclared,
    IncidentReprioritized,
)
from shared.errors import Invalid

SubscriptionKind = Literal["p1_opened", "major_declared", "assigned_to_me"]
KINDS: frozenset[str] = frozenset(get_args(SubscriptionKind))


@dataclass(frozen=True)
class Subscription:
    user: str
    kind: SubscriptionKind
    channels: tuple[Channel, ...] = ("email",)
    services: frozenset[str] = frozenset()  # empty: every service

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise Invalid(f"a subscription kind is one of {sorted(KINDS)}, got {self.kind!r}")
        if not self.channels or not set(self.channels) <= CHANNELS:
            raise Invalid(f"a subscription's channels must be some of {sorted(CHANNELS)}")


def kinds_of(event: IncidentEvent) -> frozenset[SubscriptionKind]:
    """The subscription kinds an incident event is news for (assigned_to_me still has to be
    the subscriber)."""
    if _became_p1(event):
        return frozenset({"p1_opened"})
    if isinstance(event, IncidentMajorDeclared):
        return frozenset({"major_declared"})
    if isinstance(event, IncidentAssigned):
        unchanged = (None, event.previous_assignee)
        return frozenset() if event.assignee in unchanged else frozenset({"assigned_to_me"})
    return frozenset()


def _became_p1(event: IncidentEvent) -> bool:
    if isinstance(event, IncidentCreated):
        return event.priority == "P1"
    if isinstance(event, IncidentReprioritized):
        return event.priority == "P1" and event.previous_priority != "P1"
    return False


def matches(subscription: Subscription, event: IncidentEvent, view: TicketView) -> bool:
    if subscription.kind not in kinds_of(event) or subscription.user == event.actor:
        return False
    if subscription.services and view.service not in subscription.services:
        return False
    if subscription.kind == "assigned_to_me":
        return isinstance(event, IncidentAssigned) and event.assignee == subscription.user
    return True


def subscription_notifications(
    subscriptions: Iterable[Subscription],
    event_id: str,
    event: IncidentEvent,
    view: TicketView,
    now: datetime,
    directory: Directory,
) -> list[Notification]:
    """The notifications `event` (with id `event_id`; `view` is the ticket after it) owes the
    subscribers, after their quiet hours."""
    now = as_utc(now)
    priority = view.priority or "P5"  # unknown only for a ticket notify has not seen created
    chosen: dict[str, Notification] = {}
    for subscription in subscriptions:
        if not matches(subscription, event, view):
            continue
        for channel in subscription.channels:
            key = dedup_key(event_id, subscription.user, channel)
            chosen[key] = Notification(
                key=key, event_id=event_id, event_type=event.event_type,
                ticket_id=event.incident_id, priority=priority, recipient=subscription.user,
                channel=channel, reason="subscription", created_at=now, deliver_at=now,
                subscription=subscription.kind,
            )  # fmt: skip
    planned = (
        apply_quiet_hours(n, directory.quiet_hours.get(n.recipient)) for n in chosen.values()
    )
    return [n for n in planned if n is not None]
