"""Timer targets as references into the policy catalog, for the table's stored states.

A target is (policy reference, duration, calendar, warning levels, pause reasons). Every piece
but the duration follows from the policy version and the calendar version, which the catalog
keeps for good (policy versions are immutable; managed ones come back from the compacted
policies topic at every start). So a stored timer keeps

    [policy id, policy version, kind, duration µs, calendar]

where kind is "f" (the SLA policy's first-response target), "r" (its resolution target) or "o"
(an OLA policy's), and calendar is `[calendar id, version]` for a managed calendar or 0 for the
built-in policy's own calendar. The duration is kept because it is the figure the facts report
and a restart with other `ITSM_SLA_TARGETS` overrides must not change a running timer silently.

A reference is only written when the catalog rebuilds exactly the same target from it (checked
once per distinct target, then cached); anything else is stored whole by the codec.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from services.sla.domain import FIRST_RESPONSE, RESOLUTION, OlaPolicy, PolicyCatalog, Target
from services.sla.domain.calendar import BusinessCalendar
from services.sla.policies.model import CalendarVersion

TargetRef = list[Any]  # as stored (JSON)
_KINDS = ("f", "r", "o")
_MICRO = timedelta(microseconds=1)


class UnknownTarget(LookupError):
    """A stored reference the catalog cannot resolve (a policy or calendar version missing)."""


class TargetRefs:
    """Targets <-> references for one catalog (the processor makes a new one when its catalog is
    replaced)."""

    def __init__(self, catalog: PolicyCatalog) -> None:
        self.catalog = catalog
        self._refs: dict[Target, TargetRef | None] = {}
        self._targets: dict[tuple[Any, ...], Target] = {}
        managed = getattr(catalog, "calendars", ())  # ManagedCatalog: every version, retired too
        self._calendar_versions: dict[tuple[str, int], CalendarVersion] = {
            (c.id, c.version): c for c in managed
        }
        self._calendar_ids: dict[BusinessCalendar, list[Any]] | None = None

    def ref(self, target: Target) -> TargetRef | None:
        """The reference that rebuilds `target` exactly, or None (then it is stored whole)."""
        try:
            return self._refs[target]
        except KeyError:
            pass
        found = None
        for candidate in self._candidates(target):
            try:
                if self.target(candidate) == target:
                    found = candidate
                    break
            except UnknownTarget:
                continue
        self._refs[target] = found
        return found

    def target(self, ref: TargetRef) -> Target:
        """The target a stored reference stands for; UnknownTarget when the catalog lacks it."""
        try:
            policy_id, version, kind, duration_us, calendar = ref
            key = (policy_id, version, kind, duration_us, _calendar_key(calendar))
        except (TypeError, ValueError) as exc:
            raise UnknownTarget(f"malformed target reference {ref!r}") from exc
        cached = self._targets.get(key)
        if cached is not None:
            return cached
        try:
            policy = self.catalog.version(str(policy_id), int(version))
        except LookupError as exc:
            raise UnknownTarget(str(exc)) from exc
        if kind == "o" and isinstance(policy, OlaPolicy):
            base = policy.target()
        elif kind in ("f", "r") and not isinstance(policy, OlaPolicy):
            found = policy.target(FIRST_RESPONSE if kind == "f" else RESOLUTION)
            if found is None:
                raise UnknownTarget(f"policy {policy_id} v{version} has no {kind!r} target")
            base = found
        else:
            raise UnknownTarget(f"policy {policy_id} v{version} has no {kind!r} target")
        target = replace(
            base,
            duration=_MICRO * int(duration_us),
            calendar=policy.calendar if calendar == 0 else self._calendar(calendar),
        )
        self._targets[key] = target
        return target

    def _candidates(self, target: Target) -> list[TargetRef]:
        duration_us = target.duration // _MICRO
        calendars: list[Any] = []
        managed = self._managed_calendar(target.calendar)
        if managed is not None:
            calendars.append(managed)
        calendars.append(0)
        ref = target.policy
        return [[ref.id, ref.version, k, duration_us, c] for c in calendars for k in _KINDS]

    def _managed_calendar(self, calendar: BusinessCalendar) -> list[Any] | None:
        if self._calendar_ids is None:
            ids: dict[BusinessCalendar, list[Any]] = {}
            for (cid, version), c in sorted(self._calendar_versions.items()):
                ids.setdefault(c.business_calendar(), [cid, version])
            self._calendar_ids = ids
        return self._calendar_ids.get(calendar)

    def _calendar(self, ref: Any) -> BusinessCalendar:
        version = self._calendar_versions.get(_calendar_key(ref))
        if version is None:
            raise UnknownTarget(f"no calendar {ref!r} in the catalog")
        return version.business_calendar()


def _calendar_key(ref: Any) -> Any:
    return 0 if ref == 0 else (str(ref[0]), int(ref[1]))
