"""SLA and OLA policies: which targets a ticket is measured against, and on which calendar.

An SLA policy is chosen by ticket type and priority, optionally narrowed to a service and/or an
assignment group. The most specific match wins: service and group, then service, then group,
then neither, because a service's own agreement with its customers overrides a group's
arrangement, which overrides the default. An OLA policy is chosen by assignment group,
optionally narrowed to a priority and/or ticket type.

Policies are versioned. A timer keeps the id and version that set its target; a new version
applies from its `effective_from` to timers started or re-targeted after it, so replaying last
year's events measures them against last year's policies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, TypeVar, get_args

from services.sla.domain.calendar import BusinessCalendar
from shared.contracts.incidents import PendingReason, Priority, TicketType

FIRST_RESPONSE: Final = "first_response"
RESOLUTION: Final = "resolution"
OLA_PREFIX = "ola:"
SlaMetric = Literal["first_response", "resolution"]

BREACH = 100  # the alert level at which the target is used up
DEFAULT_WARNINGS = (50, 75, 90)
ALL_PENDING_REASONS: frozenset[PendingReason] = frozenset(get_args(PendingReason))
ALWAYS = datetime(1970, 1, 1, tzinfo=UTC)


def ola_metric(group: str) -> str:
    return f"{OLA_PREFIX}{group}"


@dataclass(frozen=True)
class PolicyRef:
    id: str
    version: int
    name: str


@dataclass(frozen=True)
class Target:
    """A budget of business time on a calendar, the percentages of it at which to warn, and the
    pending reasons that pause the clock."""

    policy: PolicyRef
    duration: timedelta
    calendar: BusinessCalendar
    warnings: tuple[int, ...] = DEFAULT_WARNINGS
    pause_on: frozenset[PendingReason] = ALL_PENDING_REASONS

    def __post_init__(self) -> None:
        if self.duration <= timedelta(0):
            raise ValueError(f"policy {self.policy.id}: a target must be positive")
        if list(self.warnings) != sorted(set(self.warnings)) or not all(
            0 < level < BREACH for level in self.warnings
        ):
            raise ValueError(
                f"policy {self.policy.id}: warnings must be increasing percentages between 0 and "
                f"100, got {self.warnings}"
            )

    @property
    def levels(self) -> tuple[int, ...]:
        """The alert levels in percent: the warnings, then the breach."""
        return (*self.warnings, BREACH)

    def amount(self, level: int) -> timedelta:
        return self.duration * level // BREACH

    def pauses(self, reason: PendingReason | None) -> bool:
        # A pending ticket without a reason pauses whenever the policy pauses at all.
        return bool(self.pause_on) and (reason is None or reason in self.pause_on)


@dataclass(frozen=True)
class SlaPolicy:
    id: str
    version: int
    name: str
    ticket_type: TicketType
    priority: Priority
    calendar: BusinessCalendar
    first_response: timedelta | None
    resolution: timedelta | None
    service: str | None = None
    group: str | None = None
    warnings: tuple[int, ...] = DEFAULT_WARNINGS
    pause_on: frozenset[PendingReason] = ALL_PENDING_REASONS
    effective_from: datetime = ALWAYS

    @property
    def ref(self) -> PolicyRef:
        return PolicyRef(self.id, self.version, self.name)

    @property
    def key(self) -> tuple[object, ...]:
        return (self.ticket_type, self.priority, self.service, self.group)

    @property
    def specificity(self) -> tuple[bool, bool]:
        return (self.service is not None, self.group is not None)

    def target(self, metric: SlaMetric) -> Target | None:
        duration = self.first_response if metric == FIRST_RESPONSE else self.resolution
        if duration is None:
            return None
        # The first response never pauses: a pending ticket has not been answered yet, and a
        # clock that pending could stop would let the response target be dodged.
        pause_on = frozenset() if metric == FIRST_RESPONSE else self.pause_on
        return Target(self.ref, duration, self.calendar, self.warnings, pause_on)

    def matches(
        self, ticket_type: TicketType, priority: Priority, service: str | None, group: str | None
    ) -> bool:
        return (
            (self.ticket_type, self.priority) == (ticket_type, priority)
            and self.service in (None, service)
            and self.group in (None, group)
        )


@dataclass(frozen=True)
class OlaPolicy:
    id: str
    version: int
    name: str
    group: str
    duration: timedelta
    calendar: BusinessCalendar
    priority: Priority | None = None
    ticket_type: TicketType | None = None
    warnings: tuple[int, ...] = DEFAULT_WARNINGS
    pause_on: frozenset[PendingReason] = ALL_PENDING_REASONS
    effective_from: datetime = ALWAYS

    @property
    def ref(self) -> PolicyRef:
        return PolicyRef(self.id, self.version, self.name)

    @property
    def key(self) -> tuple[object, ...]:
        return (self.group, self.priority, self.ticket_type)

    @property
    def specificity(self) -> tuple[bool, bool]:
        return (self.priority is not None, self.ticket_type is not None)

    def target(self) -> Target:
        return Target(self.ref, self.duration, self.calendar, self.warnings, self.pause_on)

    def matches(self, group: str, ticket_type: TicketType, priority: Priority) -> bool:
        return (
            self.group == group
            and self.priority in (None, priority)
            and self.ticket_type in (None, ticket_type)
        )


P = TypeVar("P", SlaPolicy, OlaPolicy)


@dataclass(frozen=True)
class PolicyCatalog:
    """Every version of every policy. Two policies (different ids) with the same match key are
    refused: which one wins would be an accident of ordering."""

    sla: tuple[SlaPolicy, ...] = ()
    ola: tuple[OlaPolicy, ...] = ()

    def __post_init__(self) -> None:
        for kind, policies in (("SLA", self.sla), ("OLA", self.ola)):
            versions = [(p.id, p.version) for p in policies]
            if len(versions) != len(set(versions)):
                raise ValueError(f"{kind} policy versions must be unique (id, version) pairs")
            owners: dict[tuple[object, ...], str] = {}
            for p in policies:
                if owners.setdefault(p.key, p.id) != p.id:
                    raise ValueError(
                        f"{kind} policies {owners[p.key]!r} and {p.id!r} match the same tickets"
                    )

    def sla_policy(
        self,
        ticket_type: TicketType,
        priority: Priority,
        service: str | None,
        group: str | None,
        at: datetime,
    ) -> SlaPolicy | None:
        candidates = _in_force(self.sla, at)
        matches = [p for p in candidates if p.matches(ticket_type, priority, service, group)]
        return max(matches, key=lambda p: p.specificity, default=None)

    def ola_policy(
        self, group: str, ticket_type: TicketType, priority: Priority, at: datetime
    ) -> OlaPolicy | None:
        matches = [p for p in _in_force(self.ola, at) if p.matches(group, ticket_type, priority)]
        return max(matches, key=lambda p: p.specificity, default=None)

    def version(self, policy_id: str, version: int) -> SlaPolicy | OlaPolicy:
        """A stored version, e.g. to rebuild a persisted timer's target."""
        policies: list[SlaPolicy | OlaPolicy] = [*self.sla, *self.ola]
        for p in policies:
            if (p.id, p.version) == (policy_id, version):
                return p
        raise LookupError(f"no policy {policy_id!r} version {version}")


def _in_force(policies: Iterable[P], at: datetime) -> list[P]:
    """Per policy id, its highest version in effect at `at`."""
    latest: dict[str, P] = {}
    for p in policies:
        if p.effective_from <= at and (p.id not in latest or p.version > latest[p.id].version):
            latest[p.id] = p
    return list(latest.values())
