"""Events and configuration for the notify service's tests (and the SLA API's access tests):
SLA and incident facts as the other services publish them, assignment groups as incidents
publishes them, escalation policies as the API takes them, and a mailbox for a
real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from shared.contracts.envelope import Envelope
from shared.contracts.incidents import (
    AssignmentGroupSaved,
    IncidentAssigned,
    IncidentCreated,
    IncidentEvent,
    IncidentResolved,
    Priority,
    Tier,
)
from shared.contracts.sla import SlaBreached, SlaEvent, SlaMet

BREACHED = SlaBreached.event_type


def sla_fact(
    cls: type[SlaEvent], ticket_id: str, at: datetime, *, sequence: int = 1,
    priority: Priority = "P2", metric: str = "resolution", **extra: Any,
) -> Envelope:  # fmt: skip
    status = {SlaBreached: "breached", SlaMet: "met"}.get(cls, "running")
    fact = cls(
        ticket_id=ticket_id, ticket_type="incident", metric=metric, priority=priority,
        policy_id="standard", policy_version=1, policy_name="Standard", calendar="24x7",
        status=status, target_seconds=3600, elapsed_seconds=3600, deadline=at, occurred_at=at,
        **extra,
    )  # fmt: skip
    return Envelope(
        type=cls.event_type, source="/itsm/sla", subject=ticket_id, sequence=sequence,
        data=fact.model_dump(mode="json"), time=at,
    )  # fmt: skip


def breach(ticket_id: str, at: datetime, **kwargs: Any) -> Envelope:
    return sla_fact(SlaBreached, ticket_id, at, **kwargs)


def incident_event(event: IncidentEvent, sequence: int, at: datetime) -> Envelope:
    return Envelope(
        type=event.event_type, source="/itsm/incidents", subject=event.incident_id,
        sequence=sequence, data=event.model_dump(mode="json"), time=at,
    )  # fmt: skip


def created(ticket_id: str, at: datetime, *, priority: Priority = "P2", actor: str = "alice",
            service: str | None = "mail") -> Envelope:  # fmt: skip
    impact, urgency = (1, 1) if priority == "P1" else (2, 2)
    event = IncidentCreated(
        incident_id=ticket_id, actor=actor, status="new", number="INC0000042",
        title="Mail is down", requester=actor, impact=impact, urgency=urgency,
        priority=priority, service=service, opened_at=at,
    )  # fmt: skip
    return incident_event(event, 1, at)


def resolved(ticket_id: str, at: datetime, *, sequence: int = 2) -> Envelope:
    event = IncidentResolved(
        incident_id=ticket_id, actor="agent", status="resolved", resolution_code="fixed",
        resolution_notes="restarted", resolved_at=at, first_contact_resolution=False,
        group=None, tier=None,
    )  # fmt: skip
    return incident_event(event, sequence, at)


SOME_TIME = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def assigned(
    ticket_id: str, sequence: int, group: str, assignee: str | None = None, tier: Tier = "L1",
    *, at: datetime = SOME_TIME,
) -> Envelope:  # fmt: skip
    event = IncidentAssigned(
        incident_id=ticket_id, actor="maria", status="assigned", group=group, tier=tier,
        assignee=assignee, previous_group=None, previous_assignee=None, reassignment_count=0,
    )  # fmt: skip
    return incident_event(event, sequence, at)


def group_saved(
    name: str, tier: Tier, members: list[str], sequence: int = 1, *, at: datetime = SOME_TIME
) -> Envelope:
    data = AssignmentGroupSaved(name=name, tier=tier, members=members)
    return Envelope(
        type=data.event_type, source="/itsm/incidents", subject=name, sequence=sequence,
        data=data.model_dump(mode="json"), time=at,
    )  # fmt: skip


def ladder(
    policy_id: str = "breach-ladder", *, first: str = "alice", second: str = "lead",
    second_after: float = 900, channels: tuple[str, ...] = ("email",),
    event_types: tuple[str, ...] = (BREACHED,),
) -> dict[str, Any]:  # fmt: skip
    """A two-level policy body: `first` at once, `second` after `second_after` seconds."""
    return {
        "id": policy_id,
        "name": "Breach ladder",
        "match": {"event_types": list(event_types)},
        "levels": [
            {"delay_seconds": 0, "targets": [{"kind": "user", "name": first}],
             "channels": list(channels)},
            {"delay_seconds": second_after, "targets": [{"kind": "user", "name": second}],
             "channels": list(channels)},
        ],
    }  # fmt: skip


@dataclass
class Mailbox:
    """An aiosmtpd handler keeping every message it accepts:
    `Controller(Mailbox(), hostname="127.0.0.1", port=free_port())`."""

    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 2.0.0 accepted"

    def to(self, address: str, ticket: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in str(m["To"]) and ticket in str(m["Subject"])]
