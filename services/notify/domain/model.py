"""The values the notify domain takes in and gives out: plain frozen dataclasses that the API,
the store and the consumers map to and from (the domain knows no JSON, no MongoDB, no Kafka)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from shared.contracts.incidents import Priority
from shared.contracts.notify import Channel as Channel  # re-exported: the domain speaks it

CHANNELS: frozenset[Channel] = frozenset(get_args(Channel))
TargetKind = Literal["user", "group", "rotation"]
Reason = Literal["escalation", "subscription"]


@dataclass(frozen=True)
class Target:
    """Whom a level notifies: a user, every member of a group, or whoever is on call in a
    rotation at the moment the level fires."""

    kind: TargetKind
    name: str

    def __post_init__(self) -> None:
        if self.kind not in ("user", "group", "rotation"):
            raise ValueError(f"a target is a user, group or rotation, got {self.kind!r}")
        if not self.name.strip():
            raise ValueError(f"a {self.kind} target needs a name")

    @classmethod
    def user(cls, name: str) -> Target:
        return cls("user", name)

    @classmethod
    def group(cls, name: str) -> Target:
        return cls("group", name)

    @classmethod
    def rotation(cls, name: str) -> Target:
        return cls("rotation", name)


@dataclass(frozen=True)
class Trigger:
    """An event that may start an escalation, as policies match it. `event_id` is the source
    event's id (its CloudEvent id): the same id again is a redelivery. `metric` is the SLA metric
    for SLA facts (`first_response`, `resolution`, `ola:<group>`), None for incident events."""

    event_id: str
    event_type: str
    ticket_id: str
    priority: Priority
    occurred_at: datetime
    service: str | None = None
    group: str | None = None
    metric: str | None = None


@dataclass(frozen=True)
class Notification:
    """One message to one person on one channel. `deliver_at` is when it may go out (later
    than `created_at` when the recipient's quiet hours defer it). `step` numbers the escalation
    steps across repeat rounds (0 for subscriptions), so a repeat reaches the same person again
    while a redelivered event does not."""

    key: str  # dedup key: event id x step x recipient x channel
    event_id: str
    event_type: str
    ticket_id: str
    priority: Priority
    recipient: str
    channel: Channel
    reason: Reason
    created_at: datetime
    deliver_at: datetime
    step: int = 0
    escalation_id: str | None = None
    level: int | None = None  # 1-based level of the escalation ladder
    round: int | None = None  # 1-based repeat round
    subscription: str | None = None  # the subscription kind that matched

    @property
    def deferred(self) -> bool:
        return self.deliver_at > self.created_at


# Facts about escalations, for the service to publish through its outbox: each maps one to one
# onto shared/contracts/notify.py (EscalationResolved and EscalationExhausted both onto
# escalation_stopped, with reason resolved/cancelled and exhausted).

StopReason = Literal["resolved", "cancelled"]
AckVia = Literal["api", "link"]


@dataclass(frozen=True)
class EscalationTriggered:
    escalation_id: str
    ticket_id: str
    policy_id: str
    policy_version: int
    trigger_event_id: str
    trigger_event_type: str
    priority: Priority
    levels: int
    at: datetime


@dataclass(frozen=True)
class LevelNotified:
    """A level fired. Empty `recipients`, or any `unresolved` target, is a misconfiguration
    worth an operator's attention."""

    escalation_id: str
    ticket_id: str
    policy_id: str
    policy_version: int
    level: int
    round: int
    step: int
    recipients: tuple[str, ...]
    unresolved: tuple[Target, ...]  # unknown groups or rotations, empty groups
    next_level_at: datetime | None  # unless acknowledged; None after the last step
    at: datetime


@dataclass(frozen=True)
class EscalationAcknowledged:
    escalation_id: str
    ticket_id: str
    policy_id: str
    policy_version: int
    by: str
    via: AckVia
    level: int  # the level reached (0 if acknowledged before the first fired)
    at: datetime


@dataclass(frozen=True)
class EscalationResolved:
    """Stopped because the ticket, or the SLA clock it was about, was settled; `cause` is the
    CloudEvents type of the event that settled it."""

    escalation_id: str
    ticket_id: str
    policy_id: str
    policy_version: int
    reason: StopReason
    cause: str
    at: datetime


@dataclass(frozen=True)
class EscalationExhausted:
    """Every level of every round has fired and nobody acknowledged."""

    escalation_id: str
    ticket_id: str
    policy_id: str
    policy_version: int
    at: datetime


EscalationFact = (
    EscalationTriggered
    | LevelNotified
    | EscalationAcknowledged
    | EscalationResolved
    | EscalationExhausted
)
