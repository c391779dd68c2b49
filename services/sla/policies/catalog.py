"""The catalog a worker measures tickets against: the built-in policies, with the managed
versions read from the policies topic in front of them.

A managed policy applies from its version's `effective_from` until a later version (or its
retirement) takes over; among the managed policies in force the most specific match wins, as in
`PolicyCatalog`. Only where no managed policy matches does the built-in catalog answer, so a
managed policy for `incident x P1` replaces the default `P1 incidents` from its effective_from
on, and before that (e.g. replaying last year's tickets) the default still applies.

A policy is measured on the version of its calendar in force at the instant it is selected
(the first version, before any is in force), so new holidays reach every policy using the
calendar without a new policy version. Policies whose calendar has not arrived yet (another
partition of the topic) are left out until it does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from services.sla.domain.calendar import BusinessCalendar, as_utc
from services.sla.domain.policy import OlaPolicy, PolicyCatalog, SlaPolicy
from services.sla.policies.model import (
    CalendarSpec,
    CalendarVersion,
    PolicySpec,
    PolicyVersion,
    Selector,
    calendar_version,
    policy_version,
)
from shared.contracts.incidents import Priority, TicketType
from shared.contracts.registry import contract_for
from shared.contracts.sla_policies import (
    CalendarVersionEvent,
    PolicyVersionEvent,
    SlaCalendarPublished,
    SlaPolicyPublished,
    SlaPolicyRetired,
)


@dataclass(frozen=True)
class Retirement:
    policy_id: str
    version: int
    effective_from: datetime


@dataclass(frozen=True)
class ManagedCatalog(PolicyCatalog):
    """`sla`/`ola` (inherited) are the built-in policies; the rest is what the topic said."""

    policies: tuple[PolicyVersion, ...] = ()
    retirements: tuple[Retirement, ...] = ()
    calendars: tuple[CalendarVersion, ...] = ()

    @cached_property
    def _timelines(self) -> dict[str, list[tuple[int, datetime, PolicyVersion | None]]]:
        """Per policy id, its versions (None: retired) by version number."""
        lines: dict[str, list[tuple[int, datetime, PolicyVersion | None]]] = {}
        for p in self.policies:
            lines.setdefault(p.id, []).append((p.version, p.effective_from, p))
        for r in self.retirements:
            lines.setdefault(r.policy_id, []).append((r.version, r.effective_from, None))
        return {pid: sorted(line, key=lambda v: v[0]) for pid, line in lines.items()}

    @cached_property
    def _calendars(self) -> dict[str, list[CalendarVersion]]:
        by_id: dict[str, list[CalendarVersion]] = {}
        for c in sorted(self.calendars, key=lambda c: c.version):
            if not c.retired:
                by_id.setdefault(c.id, []).append(c)
        return by_id

    def calendar_at(self, calendar_id: str, at: datetime) -> BusinessCalendar | None:
        versions = self._calendars.get(calendar_id)
        if not versions:
            return None
        in_force = [c for c in versions if c.effective_from <= at]
        return (in_force[-1] if in_force else versions[0]).business_calendar()

    def in_force(self, at: datetime) -> list[PolicyVersion]:
        """Per managed policy, its highest version in effect at `at`, unless that retired it."""
        found = []
        for line in self._timelines.values():
            current = [v for _, start, v in line if start <= at]
            if current and current[-1] is not None:
                found.append(current[-1])
        return found

    def _best(self, candidates: Iterable[PolicyVersion], at: datetime) -> Any:
        policies = []
        for version in candidates:
            calendar = self.calendar_at(version.calendar_id, at)
            if calendar is not None:
                policies.append(version.to_domain(calendar))
        # Ties cannot come from the API (it refuses overlapping selectors); the id keeps any
        # that came from elsewhere deterministic.
        return max(policies, key=lambda p: (p.specificity, p.id), default=None)

    def sla_policy(
        self,
        ticket_type: TicketType,
        priority: Priority,
        service: str | None,
        group: str | None,
        at: datetime,
    ) -> SlaPolicy | None:
        at = as_utc(at)
        versions = [v for v in self.in_force(at) if v.selector.kind == "sla"]
        matching = [
            v for v in versions if _sla_matches(v.selector, ticket_type, priority, service, group)
        ]
        best: SlaPolicy | None = self._best(matching, at)
        return best or super().sla_policy(ticket_type, priority, service, group, at)

    def ola_policy(
        self, group: str, ticket_type: TicketType, priority: Priority, at: datetime
    ) -> OlaPolicy | None:
        at = as_utc(at)
        versions = [v for v in self.in_force(at) if v.selector.kind == "ola"]
        best: OlaPolicy | None = self._best(
            (v for v in versions if _ola_matches(v.selector, group, ticket_type, priority)), at
        )
        return best or super().ola_policy(group, ticket_type, priority, at)

    def version(self, policy_id: str, version: int) -> SlaPolicy | OlaPolicy:
        for p in self.policies:
            if (p.id, p.version) == (policy_id, version):
                calendar = self.calendar_at(p.calendar_id, p.effective_from)
                if calendar is not None:
                    return p.to_domain(calendar)
        return super().version(policy_id, version)


def _sla_matches(
    s: Selector, ticket_type: TicketType, priority: Priority, service: str | None,
    group: str | None,
) -> bool:  # fmt: skip
    return (
        (s.ticket_type, s.priority) == (ticket_type, priority)
        and s.service in (None, service)
        and s.group in (None, group)
    )


def _ola_matches(s: Selector, group: str, ticket_type: TicketType, priority: Priority) -> bool:
    return (
        s.group == group and s.priority in (None, priority) and s.ticket_type in (None, ticket_type)
    )


# -- what the topic says ----------------------------------------------------------------------


@dataclass
class PolicyLog:
    """Every version read from the policies topic, by record key: a redelivered version replaces
    itself, and the order versions arrive in (they sit on different partitions) does not matter."""

    defaults: PolicyCatalog
    _entries: dict[str, PolicyVersion | Retirement | CalendarVersion] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, type_name: str, data: Mapping[str, Any]) -> bool:
        """Record one event; False when it is not a policy or calendar version. Raises
        ValueError (pydantic's ValidationError included) for one that is but cannot be read."""
        contract = contract_for(type_name)
        if not issubclass(contract, (PolicyVersionEvent, CalendarVersionEvent)):
            return False
        entry = version_from_event(contract.model_validate(data))
        if entry is None:
            return True
        kind = "calendar" if isinstance(entry, CalendarVersion) else "policy"
        key = entry.policy_id if isinstance(entry, Retirement) else entry.id
        self._entries[f"{kind}:{key}:{entry.version}"] = entry
        return True

    def catalog(self) -> ManagedCatalog:
        entries = list(self._entries.values())
        return ManagedCatalog(
            sla=self.defaults.sla,
            ola=self.defaults.ola,
            policies=tuple(e for e in entries if isinstance(e, PolicyVersion)),
            retirements=tuple(e for e in entries if isinstance(e, Retirement)),
            calendars=tuple(e for e in entries if isinstance(e, CalendarVersion)),
        )


def version_from_event(event: Any) -> PolicyVersion | Retirement | CalendarVersion | None:
    """A version as the worker keeps it, from its contract event. Calendar retirements return
    None: they only stop new policy versions from using the calendar (an API rule)."""
    if isinstance(event, SlaPolicyRetired):
        return Retirement(event.policy_id, event.version, as_utc(event.effective_from))
    if isinstance(event, SlaPolicyPublished):
        spec = PolicySpec(
            name=event.name,
            selector=Selector(
                event.kind, event.ticket_type, event.priority, event.service, event.group
            ),
            calendar_id=event.calendar_id,
            first_response=_duration(event.first_response_seconds),
            resolution=_duration(event.resolution_seconds),
            target=_duration(event.target_seconds),
            warnings=tuple(event.warnings),
            pause_on=frozenset(event.pause_on),
        )
        return policy_version(
            event.policy_id, event.version, spec, as_utc(event.effective_from), event.actor,
            as_utc(event.recorded_at),
        )  # fmt: skip
    if isinstance(event, SlaCalendarPublished):
        calendar = CalendarSpec(event.name, event.time_zone, event.hours, tuple(event.holidays))
        return calendar_version(
            event.calendar_id, event.version, calendar, as_utc(event.effective_from), event.actor,
            as_utc(event.recorded_at),
        )  # fmt: skip
    return None


def _duration(seconds: int | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)
