"""The notify facts as event contracts: escalation facts from the domain, and a delivery's
final outcome. Pure mapping, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from services.notify.domain.model import (
    EscalationAcknowledged,
    EscalationExhausted,
    EscalationFact,
    EscalationResolved,
    EscalationTriggered,
    LevelNotified,
    Notification,
)
from shared.contracts import notify as contract
from shared.contracts.registry import EventData

SOURCE = "/itsm/notify"
MAX_ERROR = 500


def escalation_event(fact: EscalationFact) -> EventData:
    common = {
        "escalation_id": fact.escalation_id,
        "ticket_id": fact.ticket_id,
        "policy_id": fact.policy_id,
        "policy_version": fact.policy_version,
        "occurred_at": fact.at,
    }
    if isinstance(fact, EscalationTriggered):
        return contract.EscalationTriggered(
            **common,
            trigger_event_id=fact.trigger_event_id,
            trigger_type=fact.trigger_event_type,
            priority=fact.priority,
            levels=fact.levels,
        )
    if isinstance(fact, LevelNotified):
        return contract.EscalationLevelNotified(
            **common,
            level=fact.level,
            round=fact.round,
            step=fact.step,
            recipients=list(fact.recipients),
            unresolved=[f"{t.kind}:{t.name}" for t in fact.unresolved],
            next_level_at=fact.next_level_at,
        )
    if isinstance(fact, EscalationAcknowledged):
        return contract.EscalationAcknowledged(
            **common, acknowledged_by=fact.by, via=fact.via, level=fact.level
        )
    if isinstance(fact, EscalationResolved):
        return contract.EscalationStopped(**common, reason=fact.reason, cause=fact.cause)
    if isinstance(fact, EscalationExhausted):
        return contract.EscalationStopped(**common, reason="exhausted")
    raise TypeError(f"not an escalation fact: {fact!r}")


def escalation_events(facts: Iterable[EscalationFact]) -> list[EventData]:
    return [escalation_event(f) for f in facts]


def notification_event(
    notification: Notification,
    *,
    sent: bool,
    destination: str,
    attempts: int,
    at: datetime,
    error: str = "",
    permanent: bool = False,
) -> EventData:
    """notification_sent, or notification_failed with the last error."""
    common = {
        "notification_id": notification.key,
        "dedup_key": notification.key,
        "ticket_id": notification.ticket_id,
        "recipient": notification.recipient,
        "channel": notification.channel,
        "destination": destination,
        "escalation_id": notification.escalation_id,
        "level": notification.level,
        "reason": notification.reason,
        "trigger_type": notification.event_type,
        "attempts": max(attempts, 1),
        "occurred_at": at,
    }
    if sent:
        return contract.NotificationSent(**common)
    return contract.NotificationFailed(
        **common, error=(error or "failed")[:MAX_ERROR], permanent=permanent
    )
