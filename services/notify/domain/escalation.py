"""One escalation: a policy's ladder running for one triggering event.

Its status moves by a table. `triggered` -> `notified` when a level fires (and stays there as
further levels fire); -> `acknowledged` when someone takes it (no further level fires); ->
`resolved` when the ticket is resolved, closed or cancelled, or, for an SLA-triggered
escalation, when that SLA clock stops; -> `exhausted` when the last level of the last round
has fired unacknowledged (it can still be acknowledged or resolved afterwards, for the record).

Levels fall due at `started_at + policy.offset(step)`. `due_levels(escalation, now, directory)`
fires every step due by `now`, resolving targets at that moment (whoever is on call now), and
returns one notification per recipient x channel; when a late wake-up fires several steps at
once, a person on more than one of them gets one message per channel, for the highest level.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from services.notify.domain.clock import as_utc
from services.notify.domain.delivery import dedup_key
from services.notify.domain.model import (
    AckVia,
    Channel,
    EscalationAcknowledged,
    EscalationExhausted,
    EscalationFact,
    EscalationResolved,
    EscalationTriggered,
    LevelNotified,
    Notification,
    StopReason,
    Trigger,
)
from services.notify.domain.policies import EscalationPolicy
from services.notify.domain.quiet_hours import apply_quiet_hours
from services.notify.domain.recipients import Directory, resolve
from shared.errors import Conflict

EscalationStatus = Literal["triggered", "notified", "acknowledged", "resolved", "exhausted"]
EscalationAction = Literal["notify", "acknowledge", "resolve", "exhaust"]

TRANSITIONS: dict[tuple[EscalationStatus, EscalationAction], EscalationStatus] = {
    ("triggered", "notify"): "notified",
    ("triggered", "acknowledge"): "acknowledged",
    ("triggered", "resolve"): "resolved",
    ("notified", "notify"): "notified",
    ("notified", "acknowledge"): "acknowledged",
    ("notified", "resolve"): "resolved",
    ("notified", "exhaust"): "exhausted",
    ("acknowledged", "resolve"): "resolved",
    ("exhausted", "acknowledge"): "acknowledged",
    ("exhausted", "resolve"): "resolved",
}
RUNNING: frozenset[EscalationStatus] = frozenset({"triggered", "notified"})
_ESCALATIONS = uuid.UUID("6f1d7c1e-2b8a-5d0e-9c4f-00000a000000")  # this domain's UUIDv5 namespace


class InvalidEscalationTransition(Conflict):
    def __init__(self, status: EscalationStatus, action: EscalationAction) -> None:
        allowed = allowed_actions(status)
        super().__init__(
            f"cannot {action} an escalation that is {status}; allowed: "
            f"{', '.join(allowed) or 'none'}",
            current_status=status,
            allowed_actions=allowed,
        )


def allowed_actions(status: EscalationStatus) -> list[EscalationAction]:
    return [action for (source, action) in TRANSITIONS if source == status]


def next_status(status: EscalationStatus, action: EscalationAction) -> EscalationStatus:
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        raise InvalidEscalationTransition(status, action) from None


@dataclass(frozen=True)
class Escalation:
    id: str
    trigger: Trigger
    policy: EscalationPolicy  # the version it started with, whatever is edited later
    status: EscalationStatus
    started_at: datetime
    fired: int = 0  # steps fired so far, over all rounds
    notified: tuple[str, ...] = ()  # everyone paged so far: who may acknowledge by link
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    ended_at: datetime | None = None  # resolved or exhausted
    end_reason: str | None = None

    @property
    def running(self) -> bool:
        return self.status in RUNNING

    @property
    def level(self) -> int:
        """The level (1-based) last fired; 0 before the first."""
        return 0 if self.fired == 0 else (self.fired - 1) % len(self.policy.levels) + 1


Outcome = tuple[Escalation, list[EscalationFact]]
Fired = tuple[Escalation, list[Notification], list[EscalationFact]]


def awaits_acknowledgement(escalation: Escalation) -> bool:
    """Someone may still take it: running, or exhausted without anyone having taken it."""
    return (escalation.status, "acknowledge") in TRANSITIONS


def escalation_id(policy_id: str, trigger_event_id: str) -> str:
    """Derived from the policy and the trigger, so a redelivered event names the escalation it
    already started; a UUID, so it sits in a URL path whatever the ids hold."""
    return str(uuid.uuid5(_ESCALATIONS, json.dumps([policy_id, trigger_event_id])))


def start(policy: EscalationPolicy, trigger: Trigger, now: datetime) -> Outcome:
    """A new escalation of `trigger` on `policy`, its ladder counted from `now` (when notify
    learned of the event: a late event still gives level 1 its full time to acknowledge)."""
    now = as_utc(now)
    escalation = Escalation(
        id=escalation_id(policy.id, trigger.event_id),
        trigger=trigger,
        policy=policy,
        status="triggered",
        started_at=now,
    )
    fact = EscalationTriggered(
        escalation_id=escalation.id, ticket_id=trigger.ticket_id, policy_id=policy.id,
        policy_version=policy.version, trigger_event_id=trigger.event_id,
        trigger_event_type=trigger.event_type, priority=trigger.priority,
        levels=len(policy.levels), at=now,
    )  # fmt: skip
    return escalation, [fact]


def next_wakeup(escalation: Escalation) -> datetime | None:
    """When the next level falls due; None once nothing more can fire."""
    if not escalation.running or escalation.fired >= escalation.policy.steps:
        return None
    return escalation.started_at + escalation.policy.offset(escalation.fired)


def due_levels(escalation: Escalation, now: datetime, directory: Directory) -> Fired:
    """Fire every step due by `now`: the notifications to send and the new state."""
    now = as_utc(now)
    facts: list[EscalationFact] = []
    chosen: dict[tuple[str, Channel], Notification] = {}  # (recipient, channel) -> latest step
    while (due := next_wakeup(escalation)) is not None and due <= now:
        step = escalation.fired + 1  # 1-based over all rounds
        round_, index = divmod(escalation.fired, len(escalation.policy.levels))
        level = escalation.policy.levels[index]
        people = resolve(level.targets, directory, now)
        for recipient in people.recipients:
            for channel in level.channels:
                chosen[(recipient, channel)] = _notification(
                    escalation, step, index + 1, round_ + 1, recipient, channel, now
                )
        newly = (p for p in people.recipients if p not in escalation.notified)
        escalation = replace(
            escalation,
            status=next_status(escalation.status, "notify"),
            fired=step,
            notified=(*escalation.notified, *newly),
        )
        facts.append(
            LevelNotified(
                **_ids(escalation), level=index + 1, round=round_ + 1, step=step,
                recipients=people.recipients, unresolved=people.unresolved,
                next_level_at=next_wakeup(escalation), at=now,
            )
        )  # fmt: skip
        if step == escalation.policy.steps:
            escalation = _end(escalation, "exhaust", now, "exhausted")
            facts.append(EscalationExhausted(**_ids(escalation), at=now))
    planned = (
        apply_quiet_hours(n, directory.quiet_hours.get(n.recipient)) for n in chosen.values()
    )
    return escalation, [n for n in planned if n is not None], facts


def acknowledge(escalation: Escalation, by: str, now: datetime, *, via: AckVia = "api") -> Outcome:
    """`by` takes the escalation: no further level fires. Raises InvalidEscalationTransition
    when it is already acknowledged or resolved (the answer names its status)."""
    now = as_utc(now)
    status = next_status(escalation.status, "acknowledge")
    acknowledged = replace(escalation, status=status, acknowledged_by=by, acknowledged_at=now)
    fact = EscalationAcknowledged(
        **_ids(escalation), by=by, via=via, level=escalation.level, at=now
    )
    return acknowledged, [fact]


def settle(escalation: Escalation, reason: StopReason, cause: str, now: datetime) -> Outcome:
    """The ticket (or the SLA clock it was about) is settled by an event of type `cause`: the
    escalation is resolved. A fact redelivered after that changes nothing."""
    if (escalation.status, "resolve") not in TRANSITIONS:
        return escalation, []
    now = as_utc(now)
    resolved = _end(escalation, "resolve", now, reason)
    fact = EscalationResolved(**_ids(escalation), reason=reason, cause=cause, at=now)
    return resolved, [fact]


def still_wanted(escalation: Escalation, notification: Notification) -> bool:
    """Whether a (deferred) notification of this escalation should still go out when its time
    comes: not once someone acknowledged or the ticket was settled."""
    if notification.escalation_id != escalation.id:
        return True  # not this escalation's to judge
    return escalation.running or escalation.status == "exhausted"


def _ids(escalation: Escalation) -> dict[str, Any]:
    """The fields every escalation fact starts with."""
    return {
        "escalation_id": escalation.id,
        "ticket_id": escalation.trigger.ticket_id,
        "policy_id": escalation.policy.id,
        "policy_version": escalation.policy.version,
    }


def _end(
    escalation: Escalation, action: EscalationAction, now: datetime, reason: str
) -> Escalation:
    status = next_status(escalation.status, action)
    return replace(escalation, status=status, ended_at=now, end_reason=reason)


def _notification(
    escalation: Escalation, step: int, level: int, round_: int, recipient: str, channel: Channel,
    now: datetime,
) -> Notification:  # fmt: skip
    trigger = escalation.trigger
    return Notification(
        key=dedup_key(trigger.event_id, recipient, channel, step),
        event_id=trigger.event_id,
        event_type=trigger.event_type,
        ticket_id=trigger.ticket_id,
        priority=trigger.priority,
        recipient=recipient,
        channel=channel,
        reason="escalation",
        created_at=now,
        deliver_at=now,
        step=step,
        escalation_id=escalation.id,
        level=level,
        round=round_,
    )
