"""The notify domain: escalation policies and their timelines, on-call rotations, quiet hours,
subscriptions and delivery rules. Pure: no I/O, and time (and randomness) are parameters.

The service maps its stored documents and its consumed events to these frozen dataclasses, and
the facts and notifications out of them to its outbox events and channel sends.
"""

from services.notify.domain.acklinks import AckClaim, InvalidAckLink, create_token, verify_token
from services.notify.domain.book import TicketEscalations, on_settlement, on_trigger
from services.notify.domain.breaker import BreakerSettings, CircuitBreaker
from services.notify.domain.delivery import (
    Attempt,
    Delivery,
    RetryPolicy,
    classify,
    dedup_key,
    record_attempt,
)
from services.notify.domain.escalation import (
    Escalation,
    InvalidEscalationTransition,
    acknowledge,
    due_levels,
    next_wakeup,
    settle,
    still_wanted,
)
from services.notify.domain.model import (
    EscalationAcknowledged,
    EscalationExhausted,
    EscalationFact,
    EscalationResolved,
    EscalationTriggered,
    LevelNotified,
    Notification,
    Target,
    Trigger,
)
from services.notify.domain.policies import EscalationPolicy, Level, Match, PolicyCatalog, Repeat
from services.notify.domain.quiet_hours import QuietHours, apply_quiet_hours, in_quiet_hours
from services.notify.domain.rate_limit import Bucket, RateLimit
from services.notify.domain.recipients import Directory, resolve
from services.notify.domain.rotations import Override, Rotation, next_handoff, on_call
from services.notify.domain.subscriptions import Subscription, subscription_notifications
from services.notify.domain.triggers import (
    Settlement,
    TicketView,
    follow,
    incident_trigger,
    settlement,
    sla_trigger,
)

__all__ = [
    "AckClaim",
    "Attempt",
    "BreakerSettings",
    "Bucket",
    "CircuitBreaker",
    "Delivery",
    "Directory",
    "Escalation",
    "EscalationAcknowledged",
    "EscalationExhausted",
    "EscalationFact",
    "EscalationPolicy",
    "EscalationResolved",
    "EscalationTriggered",
    "InvalidAckLink",
    "InvalidEscalationTransition",
    "Level",
    "LevelNotified",
    "Match",
    "Notification",
    "Override",
    "PolicyCatalog",
    "QuietHours",
    "RateLimit",
    "Repeat",
    "RetryPolicy",
    "Rotation",
    "Settlement",
    "Subscription",
    "Target",
    "TicketEscalations",
    "TicketView",
    "Trigger",
    "acknowledge",
    "apply_quiet_hours",
    "classify",
    "create_token",
    "dedup_key",
    "due_levels",
    "follow",
    "in_quiet_hours",
    "incident_trigger",
    "next_handoff",
    "next_wakeup",
    "on_call",
    "on_settlement",
    "on_trigger",
    "record_attempt",
    "resolve",
    "settle",
    "settlement",
    "sla_trigger",
    "still_wanted",
    "subscription_notifications",
    "verify_token",
]
