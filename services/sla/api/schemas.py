"""HTTP output models of the SLA read API."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from pydantic import BaseModel, Field

from services.sla.handlers import TimerReading
from shared.contracts.incidents import Priority, TicketType
from shared.contracts.sla import TimerStatus


class TimerRead(BaseModel):
    """One SLA/OLA timer of a ticket, as seen at the request's time."""

    ticket_id: str
    ticket_type: TicketType
    metric: str = Field(description="first_response, resolution or ola:<group>")
    priority: Priority
    policy_id: str
    policy_version: int
    policy_name: str
    calendar: str
    status: TimerStatus
    target_seconds: int = Field(description="The target, in business seconds")
    elapsed_seconds: int = Field(
        description="Business seconds used by now (estimated between facts for a running timer)"
    )
    remaining_seconds: int = Field(
        description="Running: seconds until the deadline, negative once overdue. Paused or "
        "stopped: business seconds of the target left (negative when over)"
    )
    percent_used: float
    deadline: datetime | None = Field(description="None while paused before a breach")
    breached: bool
    paused: bool
    last_fact: str = Field(description="The last SLA fact applied: started, paused, breached, …")
    last_fact_at: datetime
    warning_threshold: int | None = Field(None, description="The last warning level reached")
    pending_reason: str | None = None

    @classmethod
    def of(cls, reading: TimerReading) -> TimerRead:
        return cls.model_validate(asdict(reading))


class TicketSla(BaseModel):
    ticket_id: str
    as_of: datetime = Field(description="The instant the figures were computed for")
    timers: list[TimerRead]
