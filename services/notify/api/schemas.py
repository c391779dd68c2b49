"""HTTP input and output models of the notify API. Inputs forbid unknown fields; outputs never
carry a secret (webhook secrets and Slack/Teams URLs are write-only)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from services.notify.documents import Group, Person
from services.notify.domain.clock import zone
from services.notify.domain.model import Target
from services.notify.domain.policies import EscalationPolicy, Level, Match, Repeat
from services.notify.domain.quiet_hours import QuietHours
from services.notify.domain.rotations import OnCall, Override, Rotation
from services.notify.domain.subscriptions import Subscription, SubscriptionKind
from shared.contracts.incidents import Priority
from shared.contracts.notify import Channel
from shared.http.fields import LocalTime

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Url = Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2000)]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s<>]+@[^@\s<>]+$", max_length=320)]
MAX_DELAY = timedelta(days=7).total_seconds()


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _zone(value: str) -> str:
    try:
        zone(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return value


# --- policies ---------------------------------------------------------------------------------


class TargetModel(Input):
    kind: Literal["user", "group", "rotation"]
    name: Name


class LevelModel(Input):
    delay_seconds: float = Field(ge=0, le=MAX_DELAY, description="After the escalation started")
    targets: list[TargetModel] = Field(min_length=1, max_length=50)
    channels: list[Channel] = Field(["email"], min_length=1, max_length=4)


class RepeatModel(Input):
    times: int = Field(ge=1, le=9, description="More rounds of the whole ladder")
    every_seconds: float = Field(gt=0, le=MAX_DELAY)


class MatchModel(Input):
    event_types: list[str] = Field(min_length=1, max_length=20)
    priorities: list[Priority] = []
    services: list[Name] = []
    groups: list[Name] = []


class PolicyInput(Input):
    name: Name
    match: MatchModel
    levels: list[LevelModel] = Field(min_length=1, max_length=10)
    repeat: RepeatModel | None = None
    enabled: bool = True

    def to_policy(self, policy_id: str, version: int) -> EscalationPolicy:
        """Raises Invalid (422) for what the domain refuses."""
        return EscalationPolicy(
            id=policy_id,
            version=version,
            name=self.name,
            enabled=self.enabled,
            match=Match(
                event_types=frozenset(self.match.event_types),
                priorities=frozenset(self.match.priorities),
                services=frozenset(self.match.services),
                groups=frozenset(self.match.groups),
            ),
            levels=tuple(
                Level(
                    delay=timedelta(seconds=level.delay_seconds),
                    targets=tuple(Target(t.kind, t.name) for t in level.targets),
                    channels=tuple(level.channels),
                )
                for level in self.levels
            ),
            repeat=None
            if self.repeat is None
            else Repeat(self.repeat.times, timedelta(seconds=self.repeat.every_seconds)),
        )


class PolicyCreate(PolicyInput):
    id: Identifier


class PolicyRead(BaseModel):
    id: str
    version: int
    name: str
    enabled: bool
    match: MatchModel
    levels: list[LevelModel]
    repeat: RepeatModel | None

    @classmethod
    def of(cls, policy: EscalationPolicy) -> PolicyRead:
        return cls(
            id=policy.id,
            version=policy.version,
            name=policy.name,
            enabled=policy.enabled,
            match=MatchModel(
                event_types=sorted(policy.match.event_types),
                priorities=sorted(policy.match.priorities),
                services=sorted(policy.match.services),
                groups=sorted(policy.match.groups),
            ),
            levels=[
                LevelModel(
                    delay_seconds=level.delay.total_seconds(),
                    targets=[TargetModel(kind=t.kind, name=t.name) for t in level.targets],
                    channels=list(level.channels),
                )
                for level in policy.levels
            ],
            repeat=None
            if policy.repeat is None
            else RepeatModel(
                times=policy.repeat.times, every_seconds=policy.repeat.every.total_seconds()
            ),
        )


# --- rotations --------------------------------------------------------------------------------


class RotationInput(Input):
    name: Name
    zone: str = Field(description="IANA time zone of the handoff, e.g. Europe/Berlin")
    participants: list[Name] = Field(min_length=1, max_length=100)
    handoff_weekday: int = Field(ge=0, le=6, description="0 = Monday")
    handoff_time: LocalTime = Field(description="Local time in `zone`, e.g. 09:00")
    starts: date = Field(description="The first handoff on or after it starts participants[0]")

    _zone_known = field_validator("zone")(_zone)

    def to_rotation(self, rotation_id: str, overrides: tuple[Override, ...] = ()) -> Rotation:
        return Rotation(
            id=rotation_id,
            name=self.name,
            zone=self.zone,
            participants=tuple(self.participants),
            handoff_weekday=self.handoff_weekday,
            handoff_time=self.handoff_time.replace(tzinfo=None),
            starts=self.starts,
            overrides=overrides,
        )


class RotationCreate(RotationInput):
    id: Identifier


class OverrideModel(Input):
    user: Name
    start: AwareDatetime
    end: AwareDatetime


class RotationRead(BaseModel):
    id: str
    version: int
    name: str
    zone: str
    participants: list[str]
    handoff_weekday: int
    handoff_time: LocalTime
    starts: date
    overrides: list[OverrideModel]

    @classmethod
    def of(cls, rotation: Rotation, version: int) -> RotationRead:
        return cls(
            id=rotation.id,
            version=version,
            name=rotation.name,
            zone=rotation.zone,
            participants=list(rotation.participants),
            handoff_weekday=rotation.handoff_weekday,
            handoff_time=rotation.handoff_time,
            starts=rotation.starts,
            overrides=[
                OverrideModel(user=o.user, start=o.start, end=o.end) for o in rotation.overrides
            ],
        )


class OnCallRead(BaseModel):
    rotation: str
    at: datetime
    user: str
    override: OverrideModel | None
    until: datetime | None = Field(description="The next handoff to someone else")

    @classmethod
    def of(cls, rotation: str, at: datetime, on_call: OnCall) -> OnCallRead:
        override = on_call.override
        return cls(
            rotation=rotation,
            at=at,
            user=on_call.user,
            until=on_call.until,
            override=None
            if override is None
            else OverrideModel(user=override.user, start=override.start, end=override.end),
        )


# --- the directory ----------------------------------------------------------------------------


class QuietHoursModel(Input):
    zone: str
    start: LocalTime
    end: LocalTime
    weekdays: list[int] = Field(list(range(7)), description="Days a window starts on, 0 = Monday")
    suppress: bool = Field(False, description="Drop non-P1 notifications instead of deferring")

    _zone_known = field_validator("zone")(_zone)

    def to_domain(self) -> QuietHours:
        return QuietHours(
            zone=self.zone,
            start=self.start.replace(tzinfo=None),
            end=self.end.replace(tzinfo=None),
            weekdays=frozenset(self.weekdays),
            suppress=self.suppress,
        )

    @classmethod
    def of(cls, quiet: QuietHours | None) -> QuietHoursModel | None:
        if quiet is None:
            return None
        return cls(
            zone=quiet.zone,
            start=quiet.start,
            end=quiet.end,
            weekdays=sorted(quiet.weekdays),
            suppress=quiet.suppress,
        )


class WebhookModel(Input):
    url: Url
    secret: str = Field(min_length=16, max_length=256, description="HMAC key, at least 16 bytes")
    previous_secret: str | None = Field(
        None,
        min_length=16,
        max_length=256,
        description="Rotation: the secret being retired; deliveries carry a signature with each "
        "until it is removed, so the receiver can switch keys at its own pace",
    )


class PersonInput(Input):
    name: Name | None = None
    email: Email | None = None
    webhook: WebhookModel | None = None
    slack_url: Url | None = Field(None, description="A Slack incoming webhook URL (a secret)")
    teams_url: Url | None = Field(None, description="A Teams incoming webhook URL (a secret)")
    quiet_hours: QuietHoursModel | None = None


class PersonRead(BaseModel):
    user: str
    version: int
    name: str | None
    email: str | None
    channels: list[Channel] = Field(description="The channels this person can be reached on")
    quiet_hours: QuietHoursModel | None

    @classmethod
    def of(cls, person: Person) -> PersonRead:
        return cls(
            user=person.user,
            version=person.version,
            name=person.name,
            email=person.email,
            channels=person.channels(),
            quiet_hours=QuietHoursModel.of(person.quiet_hours),
        )


class GroupInput(Input):
    members: list[Name] = Field(max_length=500)


class GroupRead(BaseModel):
    name: str
    members: list[str]
    version: int

    @classmethod
    def of(cls, group: Group) -> GroupRead:
        return cls(name=group.name, members=list(group.members), version=group.version)


# --- subscriptions ----------------------------------------------------------------------------


class SubscriptionInput(Input):
    channels: list[Channel] = Field(["email"], min_length=1, max_length=4)
    services: list[Name] = Field([], description="Only these services (empty: every service)")


class SubscriptionRead(BaseModel):
    user: str
    kind: SubscriptionKind
    channels: list[Channel]
    services: list[str]

    @classmethod
    def of(cls, subscription: Subscription) -> SubscriptionRead:
        return cls(
            user=subscription.user,
            kind=subscription.kind,
            channels=list(subscription.channels),
            services=sorted(subscription.services),
        )
