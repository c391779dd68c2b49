"""The notify domain's values as stored documents (BSON-friendly dicts) and back.

Durations are stored as seconds, local times as "HH:MM[:SS]", local dates as ISO dates and
instants as timezone-aware datetimes (UTC), so both MongoDB and the in-memory twin hold them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from services.notify.domain.escalation import Escalation
from services.notify.domain.model import Channel, Target, Trigger
from services.notify.domain.policies import EscalationPolicy, Level, Match, Repeat
from services.notify.domain.quiet_hours import QuietHours
from services.notify.domain.rotations import Override, Rotation
from services.notify.domain.subscriptions import Subscription
from services.notify.domain.triggers import TicketView

Document = dict[str, Any]


def utc(value: datetime | None) -> datetime | None:
    """BSON dates come back naive from clients without tz_aware; the platform's are UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def must_utc(value: datetime) -> datetime:
    result = utc(value)
    assert result is not None
    return result


# --- policies ---------------------------------------------------------------------------------


def policy_key(policy_id: str, version: int) -> str:
    return f"{policy_id}:{version}"


def policy_to_document(policy: EscalationPolicy) -> Document:
    return {
        "_id": policy_key(policy.id, policy.version),
        "policy_id": policy.id,
        "version": policy.version,
        "name": policy.name,
        "enabled": policy.enabled,
        "match": {
            "event_types": sorted(policy.match.event_types),
            "priorities": sorted(policy.match.priorities),
            "services": sorted(policy.match.services),
            "groups": sorted(policy.match.groups),
        },
        "levels": [
            {
                "delay_seconds": level.delay.total_seconds(),
                "targets": [{"kind": t.kind, "name": t.name} for t in level.targets],
                "channels": list(level.channels),
            }
            for level in policy.levels
        ],
        "repeat": None
        if policy.repeat is None
        else {"times": policy.repeat.times, "every_seconds": policy.repeat.every.total_seconds()},
    }


def policy_from_document(document: Document) -> EscalationPolicy:
    match = document["match"]
    repeat = document.get("repeat")
    return EscalationPolicy(
        id=document["policy_id"],
        version=int(document["version"]),
        name=document["name"],
        enabled=bool(document.get("enabled", True)),
        match=Match(
            event_types=frozenset(match["event_types"]),
            priorities=frozenset(match.get("priorities", ())),
            services=frozenset(match.get("services", ())),
            groups=frozenset(match.get("groups", ())),
        ),
        levels=tuple(
            Level(
                delay=timedelta(seconds=level["delay_seconds"]),
                targets=tuple(Target(t["kind"], t["name"]) for t in level["targets"]),
                channels=tuple(level["channels"]),
            )
            for level in document["levels"]
        ),
        repeat=None
        if not repeat
        else Repeat(times=int(repeat["times"]), every=timedelta(seconds=repeat["every_seconds"])),
    )


# --- rotations, quiet hours, subscriptions ----------------------------------------------------


@dataclass(frozen=True)
class StoredRotation:
    rotation: Rotation
    version: int


def rotation_to_document(stored: StoredRotation) -> Document:
    rotation = stored.rotation
    return {
        "_id": rotation.id,
        "version": stored.version,
        "name": rotation.name,
        "zone": rotation.zone,
        "participants": list(rotation.participants),
        "handoff_weekday": rotation.handoff_weekday,
        "handoff_time": rotation.handoff_time.isoformat(),
        "starts": rotation.starts.isoformat(),
        "overrides": [{"user": o.user, "start": o.start, "end": o.end} for o in rotation.overrides],
    }


def rotation_from_document(document: Document) -> StoredRotation:
    rotation = Rotation(
        id=document["_id"],
        name=document["name"],
        zone=document["zone"],
        participants=tuple(document["participants"]),
        handoff_weekday=int(document["handoff_weekday"]),
        handoff_time=time.fromisoformat(document["handoff_time"]),
        starts=date.fromisoformat(document["starts"]),
        overrides=tuple(
            Override(o["user"], must_utc(o["start"]), must_utc(o["end"]))
            for o in document.get("overrides", ())
        ),
    )
    return StoredRotation(rotation, int(document["version"]))


def quiet_to_document(quiet: QuietHours | None) -> Document | None:
    if quiet is None:
        return None
    return {
        "zone": quiet.zone,
        "start": quiet.start.isoformat(),
        "end": quiet.end.isoformat(),
        "weekdays": sorted(quiet.weekdays),
        "suppress": quiet.suppress,
    }


def quiet_from_document(document: Document | None) -> QuietHours | None:
    if not document:
        return None
    return QuietHours(
        zone=document["zone"],
        start=time.fromisoformat(document["start"]),
        end=time.fromisoformat(document["end"]),
        weekdays=frozenset(document.get("weekdays", range(7))),
        suppress=bool(document.get("suppress", False)),
    )


def subscription_key(user: str, kind: str) -> str:
    return f"{user}:{kind}"


def subscription_to_document(subscription: Subscription) -> Document:
    return {
        "_id": subscription_key(subscription.user, subscription.kind),
        "user": subscription.user,
        "kind": subscription.kind,
        "channels": list(subscription.channels),
        "services": sorted(subscription.services),
    }


def subscription_from_document(document: Document) -> Subscription:
    return Subscription(
        user=document["user"],
        kind=document["kind"],
        channels=tuple(document["channels"]),
        services=frozenset(document.get("services", ())),
    )


# --- people and groups (the directory) --------------------------------------------------------


@dataclass(frozen=True)
class WebhookEndpoint:
    url: str = field(repr=False)  # may carry a token: never logged
    secret: str = field(repr=False)
    previous_secret: str | None = field(default=None, repr=False)  # still signs (rotation)


@dataclass(frozen=True)
class Person:
    """Where and when a user may be reached; the URLs and the webhook secret are credentials."""

    user: str
    version: int
    name: str | None = None
    email: str | None = None
    webhook: WebhookEndpoint | None = None
    slack_url: str | None = field(default=None, repr=False)
    teams_url: str | None = field(default=None, repr=False)
    quiet_hours: QuietHours | None = None

    def channels(self) -> list[Channel]:
        """The channels this person can be reached on."""
        reachable: list[tuple[Channel, object]] = [
            ("email", self.email),
            ("webhook", self.webhook),
            ("slack", self.slack_url),
            ("teams", self.teams_url),
        ]
        return [channel for channel, value in reachable if value]


def person_to_document(person: Person) -> Document:
    return {
        "_id": person.user,
        "version": person.version,
        "name": person.name,
        "email": person.email,
        "webhook": webhook_to_document(person.webhook),
        "slack_url": person.slack_url,
        "teams_url": person.teams_url,
        "quiet_hours": quiet_to_document(person.quiet_hours),
    }


def webhook_to_document(webhook: WebhookEndpoint | None) -> Document | None:
    if webhook is None:
        return None
    document: Document = {"url": webhook.url, "secret": webhook.secret}
    if webhook.previous_secret:
        document["previous_secret"] = webhook.previous_secret
    return document


def person_from_document(document: Document) -> Person:
    webhook = document.get("webhook")
    return Person(
        user=document["_id"],
        version=int(document["version"]),
        name=document.get("name"),
        email=document.get("email"),
        webhook=WebhookEndpoint(webhook["url"], webhook["secret"], webhook.get("previous_secret"))
        if webhook
        else None,
        slack_url=document.get("slack_url"),
        teams_url=document.get("teams_url"),
        quiet_hours=quiet_from_document(document.get("quiet_hours")),
    )


@dataclass(frozen=True)
class Group:
    name: str
    members: tuple[str, ...]
    version: int


# --- ticket views and escalations -------------------------------------------------------------


def view_to_fields(view: TicketView) -> Document:
    return {
        "status": view.status,
        "priority": view.priority,
        "number": view.number,
        "title": view.title,
        "requester": view.requester,
        "service": view.service,
        "group": view.group,
        "assignee": view.assignee,
        "major": view.major,
    }


def view_from_document(document: Document) -> TicketView:
    return TicketView(
        ticket_id=document["_id"],
        status=document["status"],
        priority=document.get("priority"),
        number=document.get("number"),
        title=document.get("title"),
        requester=document.get("requester"),
        service=document.get("service"),
        group=document.get("group"),
        assignee=document.get("assignee"),
        major=bool(document.get("major")),
    )


def trigger_to_document(trigger: Trigger) -> Document:
    return {
        "event_id": trigger.event_id,
        "event_type": trigger.event_type,
        "ticket_id": trigger.ticket_id,
        "priority": trigger.priority,
        "occurred_at": trigger.occurred_at,
        "service": trigger.service,
        "group": trigger.group,
        "metric": trigger.metric,
    }


def trigger_from_document(document: Document) -> Trigger:
    return Trigger(**{**document, "occurred_at": must_utc(document["occurred_at"])})


def escalation_to_document(escalation: Escalation) -> Document:
    return {
        "id": escalation.id,
        "trigger": trigger_to_document(escalation.trigger),
        "policy": policy_to_document(escalation.policy),
        "status": escalation.status,
        "started_at": escalation.started_at,
        "fired": escalation.fired,
        "notified": list(escalation.notified),
        "acknowledged_by": escalation.acknowledged_by,
        "acknowledged_at": escalation.acknowledged_at,
        "ended_at": escalation.ended_at,
        "end_reason": escalation.end_reason,
    }


def escalation_from_document(document: Document) -> Escalation:
    return Escalation(
        id=document["id"],
        trigger=trigger_from_document(document["trigger"]),
        policy=policy_from_document(document["policy"]),
        status=document["status"],
        started_at=must_utc(document["started_at"]),
        fired=int(document["fired"]),
        notified=tuple(document.get("notified", ())),
        acknowledged_by=document.get("acknowledged_by"),
        acknowledged_at=utc(document.get("acknowledged_at")),
        ended_at=utc(document.get("ended_at")),
        end_reason=document.get("end_reason"),
    )
