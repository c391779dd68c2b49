"""Notify event contracts (`itsm.notify.*`), published by the notify service on its topic.

An escalation is one ticket's walk up an escalation policy's levels, started by a triggering
event (an SLA breach, a P1 opened, ...). A ticket's escalations are stored as one aggregate, so
escalation facts are keyed by the ticket id (their `sequence` is that aggregate's version) and
carry the escalation's own id. A notification is one message to one recipient on one channel,
identified by its dedup key (triggering event id x escalation step x recipient x channel), and
keyed by it: whatever is redelivered, it is sent at most once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.contracts.incidents import Priority
from shared.contracts.registry import EventData, event_type
from shared.contracts.topics import Topic

Channel = Literal["email", "webhook", "slack", "teams"]


class EscalationEvent(EventData):
    escalation_id: str
    ticket_id: str
    policy_id: str
    policy_version: int = Field(ge=1)
    occurred_at: datetime


class NotificationEvent(EventData):
    notification_id: str
    dedup_key: str = Field(
        description="SHA-256 of triggering event id x escalation step x recipient x channel"
    )
    ticket_id: str
    recipient: str = Field(description="The user id (or rotation/webhook target) notified")
    channel: Channel
    destination: str = Field(
        description="Where it went, without secrets: an e-mail address or a webhook's host"
    )
    escalation_id: str | None = None
    level: int | None = Field(None, ge=1)
    reason: Literal["escalation", "subscription"] = "escalation"
    trigger_type: str = Field(description="The CloudEvents type of the triggering event")
    attempts: int = Field(ge=1)
    occurred_at: datetime


def _notify(name: str):  # type: ignore[no-untyped-def]
    return event_type(f"itsm.notify.{name}.v1", topic=Topic.NOTIFY, aggregate="notify")


@_notify("escalation_triggered")
class EscalationTriggered(EscalationEvent):
    trigger_event_id: str
    trigger_type: str
    priority: Priority | None = None
    levels: int = Field(ge=1, description="How many levels the policy has")


@_notify("escalation_level_notified")
class EscalationLevelNotified(EscalationEvent):
    level: int = Field(ge=1)
    round: int = Field(1, ge=1, description="The repeat round (1 for the first pass)")
    step: int | None = Field(None, ge=1, description="Levels fired so far, over all rounds")
    recipients: list[str]
    unresolved: list[str] = Field(
        default_factory=list,
        description="Targets that named nobody (kind:name): an unknown rotation, an empty group",
    )
    next_level_at: datetime | None = Field(
        description="When the next level fires unless acknowledged; none after the last"
    )


@_notify("escalation_acknowledged")
class EscalationAcknowledged(EscalationEvent):
    acknowledged_by: str
    via: Literal["api", "link"]
    level: int = Field(
        ge=0, description="The level reached when acknowledged (0 before the first fired)"
    )


@_notify("escalation_stopped")
class EscalationStopped(EscalationEvent):
    reason: Literal["resolved", "exhausted", "cancelled"]
    cause: str | None = Field(
        None, description="The CloudEvents type of the event that settled it, if one did"
    )


@_notify("notification_sent")
class NotificationSent(NotificationEvent):
    pass


@_notify("notification_failed")
class NotificationFailed(NotificationEvent):
    error: str = Field(max_length=500)
    permanent: bool = Field(description="True when retrying could not help (e.g. a 4xx)")
