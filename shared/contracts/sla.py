"""SLA event contracts (`itsm.sla.*`), published by the sla service on the SLA events topic.

A ticket has one timer per metric: `first_response` and `resolution` (the SLA with the
requester) and `ola:<group>` (each assignment group's operational level agreement: the time the
ticket spends with that group). Every fact names the ticket, the metric, the policy version that
set the target, and the timer's figures at `occurred_at`, the instant the fact became true: for
an alert that is when it fell due, not when the processor noticed.

An alert level fires at most once per timer. `breached` is the alert that the deadline passed
while the clock ran; the clock keeps running. When the clock stops, exactly one outcome follows:
`met` (stopped before the deadline) or `missed` (stopped at or after it, the breach having been
announced before). A reopened ticket resumes its timers, so a timer can have further outcomes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.contracts.incidents import PendingReason, Priority, TicketType
from shared.contracts.registry import EventData, event_type
from shared.contracts.topics import Topic

TimerStatus = Literal["running", "paused", "met", "breached", "cancelled"]
METRIC_PATTERN = r"^(first_response|resolution|ola:.+)$"


class SlaEvent(EventData):
    ticket_id: str
    ticket_type: TicketType
    metric: str = Field(
        pattern=METRIC_PATTERN, description="first_response, resolution or ola:<group>"
    )
    priority: Priority = Field(description="The ticket's priority when the fact occurred")
    policy_id: str
    policy_version: int = Field(ge=1)
    policy_name: str
    calendar: str = Field(description="The business calendar the target is measured on")
    status: TimerStatus = Field(description="The timer's status after this fact")
    target_seconds: int = Field(gt=0, description="The target, in business seconds")
    elapsed_seconds: int = Field(
        ge=0, description="Business seconds counted at occurred_at (paused and off-hours excluded)"
    )
    deadline: datetime | None = Field(
        description="When the target is (or was) reached; none while a timer that has not "
        "breached is paused, since its deadline moves with the pause"
    )
    occurred_at: datetime


def _sla(name: str):  # type: ignore[no-untyped-def]
    return event_type(f"itsm.sla.{name}.v1", topic=Topic.SLA, aggregate="sla")


@_sla("started")
class SlaStarted(SlaEvent):
    """The clock started: at the ticket's `opened_at` (an alert's start, possibly before intake),
    or when the ticket reached a group with an OLA."""


@_sla("paused")
class SlaPaused(SlaEvent):
    """The ticket went pending for a reason the policy pauses on."""

    pending_reason: PendingReason | None


@_sla("resumed")
class SlaResumed(SlaEvent):
    reason: Literal["left_pending", "reopened", "reassigned"]


@_sla("retargeted")
class SlaRetargeted(SlaEvent):
    """Another policy applies now (a new priority, service or group): the elapsed business time
    is kept and the deadline recomputed."""

    reason: Literal["reprioritized", "service_changed", "reassigned"]
    previous_policy_id: str
    previous_policy_version: int = Field(ge=1)
    previous_target_seconds: int = Field(gt=0)
    previous_deadline: datetime | None


@_sla("warning")
class SlaWarning(SlaEvent):
    threshold: int = Field(gt=0, lt=100, description="Percent of the target elapsed")


@_sla("breached")
class SlaBreached(SlaEvent):
    """The deadline passed with the clock running (`occurred_at` is the deadline)."""


@_sla("met")
class SlaMet(SlaEvent):
    """The clock stopped before the deadline."""


@_sla("missed")
class SlaMissed(SlaEvent):
    """The clock stopped after the deadline; `elapsed_seconds - target_seconds` is by how much."""


@_sla("cancelled")
class SlaCancelled(SlaEvent):
    reason: Literal["closed", "cancelled", "no_policy"]
