"""Escalation policies: which events start an escalation, and its ladder of levels.

A policy matches on event type (required: an escalation is a deliberate answer to a kind of
event) and optionally narrows to priorities, services and assignment groups; an empty set means
any. For an event, **the most specific matching policy wins, and only it runs**: one ladder per
problem, as with an on-call service in a paging tool, so a P1 breach on the mail service pages the
mail team's ladder and not also the catch-all one. Specificity ranks service, then group, then
priority (a service's own arrangement overrides a group's, which overrides the default), like the
SLA policies. Two policies that could match the same event with the same specificity are refused:
which one ran would be an accident of ordering.

Levels fire at their delay after the escalation starts (when notify learns of the event: a late
event still gives level 1 its full chance to acknowledge). With `repeat`, the whole ladder runs
again `times` more times, each round starting `every` after the previous one.

Policies are versioned: an update is a new version of the same id, and a disabled version
retires the policy. A running escalation carries the version it started with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise

from services.notify.domain.model import CHANNELS, Channel, Target, Trigger
from shared.contracts.incidents import (
    IncidentAssigned,
    IncidentCreated,
    IncidentEscalated,
    IncidentMajorDeclared,
    IncidentReopened,
    IncidentReprioritized,
    Priority,
)
from shared.contracts.sla import SlaBreached, SlaWarning
from shared.errors import Conflict, Invalid

# The event types notify turns into triggers (see triggers.py).
TRIGGER_TYPES: frozenset[str] = frozenset(
    cls.event_type
    for cls in (
        SlaBreached, SlaWarning, IncidentCreated, IncidentMajorDeclared, IncidentAssigned,
        IncidentReprioritized, IncidentEscalated, IncidentReopened,
    )
)  # fmt: skip
MAX_LEVELS = 10
MAX_ROUNDS = 10


@dataclass(frozen=True)
class Match:
    event_types: frozenset[str]
    priorities: frozenset[Priority] = frozenset()
    services: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.event_types:
            raise Invalid("a policy must name the event types it answers")
        unknown = sorted(self.event_types - TRIGGER_TYPES)
        if unknown:
            raise Invalid(
                f"not event types that can start an escalation: {unknown}; "
                f"choose from {sorted(TRIGGER_TYPES)}"
            )

    def matches(self, trigger: Trigger) -> bool:
        return (
            trigger.event_type in self.event_types
            and _within(self.priorities, trigger.priority)
            and _within(self.services, trigger.service)
            and _within(self.groups, trigger.group)
        )

    @property
    def specificity(self) -> tuple[bool, bool, bool]:
        return (bool(self.services), bool(self.groups), bool(self.priorities))

    def overlaps(self, other: Match) -> bool:
        """Some event could match both."""
        pairs: list[tuple[frozenset[str], frozenset[str]]] = [
            (self.event_types, other.event_types),
            (frozenset(self.priorities), frozenset(other.priorities)),
            (self.services, other.services),
            (self.groups, other.groups),
        ]
        return all(not a or not b or a & b for a, b in pairs)


@dataclass(frozen=True)
class Level:
    """Notify `targets` on `channels` at `delay` after the escalation started (cumulative:
    0, 15 and 30 minutes, not 0, 15 and 15 more)."""

    delay: timedelta
    targets: tuple[Target, ...]
    channels: tuple[Channel, ...] = ("email",)

    def __post_init__(self) -> None:
        if self.delay < timedelta(0):
            raise Invalid("a level's delay must not be negative")
        if not self.targets:
            raise Invalid("a level must name at least one target")
        if not self.channels or not set(self.channels) <= CHANNELS:
            raise Invalid(f"a level's channels must be some of {sorted(CHANNELS)}")
        if len(set(self.channels)) != len(self.channels):
            raise Invalid("a level names each channel once")


@dataclass(frozen=True)
class Repeat:
    """Run the whole ladder `times` more times, a round starting `every` after the previous."""

    times: int
    every: timedelta


@dataclass(frozen=True)
class EscalationPolicy:
    id: str
    version: int
    name: str
    match: Match
    levels: tuple[Level, ...]
    repeat: Repeat | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.version < 1:
            raise Invalid(f"policy {self.id!r}: versions start at 1")
        if not 1 <= len(self.levels) <= MAX_LEVELS:
            raise Invalid(f"policy {self.id!r}: needs 1 to {MAX_LEVELS} levels")
        delays = [level.delay for level in self.levels]
        if any(b <= a for a, b in pairwise(delays)):
            raise Invalid(f"policy {self.id!r}: level delays must increase, got {delays}")
        if self.repeat is not None:
            if not 1 <= self.repeat.times < MAX_ROUNDS:
                raise Invalid(f"policy {self.id!r}: repeat 1 to {MAX_ROUNDS - 1} times")
            if self.repeat.every <= delays[-1]:
                raise Invalid(
                    f"policy {self.id!r}: a repeat must start after the last level "
                    f"({delays[-1]}), got every {self.repeat.every}"
                )

    @property
    def rounds(self) -> int:
        return 1 + (self.repeat.times if self.repeat else 0)

    @property
    def steps(self) -> int:
        """Levels over all rounds: what an escalation fires before it is exhausted."""
        return self.rounds * len(self.levels)

    def offset(self, step: int) -> timedelta:
        """When `step` (0-based, over all rounds) falls due, after the escalation started."""
        round_, index = divmod(step, len(self.levels))
        every = self.repeat.every if self.repeat else timedelta(0)
        return round_ * every + self.levels[index].delay


@dataclass(frozen=True)
class PolicyCatalog:
    """Every version of every policy; the latest enabled version of each id is in force."""

    policies: tuple[EscalationPolicy, ...] = ()

    def __post_init__(self) -> None:
        versions = [(p.id, p.version) for p in self.policies]
        if len(versions) != len(set(versions)):
            raise Invalid("policy versions must be unique (id, version) pairs")
        current = self.current()
        for i, a in enumerate(current):
            for b in current[i + 1 :]:
                if a.match.specificity == b.match.specificity and a.match.overlaps(b.match):
                    raise Conflict(
                        f"policies {a.id!r} and {b.id!r} match the same events with the same "
                        "specificity; narrow one of them (service, group or priority)",
                        policies=[a.id, b.id],
                    )

    def current(self) -> list[EscalationPolicy]:
        latest: dict[str, EscalationPolicy] = {}
        for p in self.policies:
            if p.id not in latest or p.version > latest[p.id].version:
                latest[p.id] = p
        return [p for p in latest.values() if p.enabled]

    def select(self, trigger: Trigger) -> EscalationPolicy | None:
        """The policy in force that answers `trigger`: the most specific match, or None."""
        matches = [p for p in self.current() if p.match.matches(trigger)]
        return max(matches, key=lambda p: p.match.specificity, default=None)

    def with_version(self, policy: EscalationPolicy) -> PolicyCatalog:
        """The catalog with a new version added; raises Conflict when it would be ambiguous,
        Invalid when the version is not the next one of its id."""
        latest = max((p.version for p in self.policies if p.id == policy.id), default=0)
        if policy.version != latest + 1:
            raise Invalid(f"policy {policy.id!r}: the next version is {latest + 1}")
        return PolicyCatalog((*self.policies, policy))

    def version(self, policy_id: str, version: int) -> EscalationPolicy:
        for p in self.policies:
            if (p.id, p.version) == (policy_id, version):
                return p
        raise LookupError(f"no escalation policy {policy_id!r} version {version}")


def _within(allowed: Iterable[str], value: str | None) -> bool:
    values = frozenset(allowed)
    return not values or value in values
