"""Output models of escalations and the delivery log."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from services.notify.delivery_log import DeliveryRecord, LogStatus
from services.notify.domain import escalation as esc
from services.notify.domain.escalation import Escalation, EscalationStatus
from services.notify.domain.triggers import TicketView
from shared.contracts.notify import Channel


class EscalationRead(BaseModel):
    id: str
    ticket_id: str
    policy_id: str
    policy_version: int
    status: EscalationStatus
    level: int = Field(description="The level last fired (0 before the first)")
    levels: int
    started_at: datetime
    next_level_at: datetime | None
    trigger_event_id: str
    trigger_event_type: str
    metric: str | None
    notified: list[str]
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None

    @classmethod
    def of(cls, escalation: Escalation) -> EscalationRead:
        trigger = escalation.trigger
        return cls(
            id=escalation.id,
            ticket_id=trigger.ticket_id,
            policy_id=escalation.policy.id,
            policy_version=escalation.policy.version,
            status=escalation.status,
            level=escalation.level,
            levels=len(escalation.policy.levels),
            started_at=escalation.started_at,
            next_level_at=esc.next_wakeup(escalation),
            trigger_event_id=trigger.event_id,
            trigger_event_type=trigger.event_type,
            metric=trigger.metric,
            notified=list(escalation.notified),
            acknowledged_by=escalation.acknowledged_by,
            acknowledged_at=escalation.acknowledged_at,
            ended_at=escalation.ended_at,
            end_reason=escalation.end_reason,
        )


class TicketRef(BaseModel):
    """The ticket as notify followed it from the incident events."""

    number: str | None
    title: str | None
    priority: str | None
    status: str


class AwaitingEscalationRead(EscalationRead):
    ticket: TicketRef | None = Field(description="None until notify has seen the ticket's events")

    @classmethod
    def with_ticket(cls, escalation: Escalation, view: TicketView | None) -> AwaitingEscalationRead:
        ticket = (
            None
            if view is None
            else TicketRef(
                number=view.number, title=view.title, priority=view.priority, status=view.status
            )
        )
        return cls(**EscalationRead.of(escalation).model_dump(), ticket=ticket)


class AttemptRead(BaseModel):
    at: datetime
    outcome: str
    detail: str


class DeliveryRead(BaseModel):
    key: str
    ticket_id: str
    recipient: str
    channel: Channel
    reason: str
    event_type: str
    escalation_id: str | None
    level: int | None
    status: LogStatus
    destination: str | None
    attempts: list[AttemptRead]
    next_attempt_at: datetime | None
    error: str | None
    created_at: datetime

    @classmethod
    def of(cls, record: DeliveryRecord) -> DeliveryRead:
        n = record.notification
        return cls(
            key=record.key,
            ticket_id=n.ticket_id,
            recipient=n.recipient,
            channel=n.channel,
            reason=n.reason,
            event_type=n.event_type,
            escalation_id=n.escalation_id,
            level=n.level,
            status=record.status,
            destination=record.destination,
            attempts=[
                AttemptRead(at=a.at, outcome=a.outcome, detail=a.detail) for a in record.attempts
            ],
            next_attempt_at=None if record.final else record.next_attempt_at,
            error=record.error,
            created_at=n.created_at,
        )
