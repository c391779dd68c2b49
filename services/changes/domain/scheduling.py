"""Scheduling rules: conflicts between approved changes, freeze (blackout) windows and weekly
maintenance windows in an IANA time zone. Correct across DST: a maintenance window is defined
in local wall-clock time and each week's occurrence is converted to UTC on its own date."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.changes.domain.model import Change, Window
from shared.contracts.changes import ChangeType
from shared.errors import Conflict

# Changes that hold their window: approved and not yet finished.
HOLDING_STATUSES = frozenset({"scheduled", "implementing"})


@dataclass(frozen=True)
class FreezeWindow:
    """A blackout: no changes except emergencies. Company-wide unless it names services."""

    name: str
    window: Window
    services: tuple[str, ...] = ()

    def blocks(self, change_window: Window, services: Iterable[str]) -> bool:
        applies = not self.services or bool(set(self.services) & set(services))
        return applies and self.window.overlaps(change_window)


@dataclass(frozen=True)
class MaintenanceWindow:
    """Weekly: every `weekday` (0 = Monday) from `start` local time for `duration`, in `zone`."""

    name: str
    weekday: int
    start: time
    duration: timedelta
    zone: str
    services: tuple[str, ...] = ()

    def occurrence_on(self, day: date) -> Window:
        local = datetime.combine(day, self.start, tzinfo=ZoneInfo(self.zone))
        # Wall-clock arithmetic: 22:00 + 6 h is 04:00 local the next day, whatever DST did.
        end_local = (local.replace(tzinfo=None) + self.duration).replace(tzinfo=ZoneInfo(self.zone))
        return Window(local.astimezone(ZoneInfo("UTC")), end_local.astimezone(ZoneInfo("UTC")))

    def occurrences(self, within: Window) -> Iterator[Window]:
        zone = ZoneInfo(self.zone)
        day = within.start.astimezone(zone).date() - timedelta(days=7)
        last = within.end.astimezone(zone).date() + timedelta(days=1)
        day += timedelta(days=(self.weekday - day.weekday()) % 7)
        while day <= last:
            occurrence = self.occurrence_on(day)
            if occurrence.overlaps(within):
                yield occurrence
            day += timedelta(days=7)

    def applies_to(self, services: Iterable[str]) -> bool:
        return not self.services or bool(set(self.services) & set(services))


def within_maintenance(
    window: Window, services: Iterable[str], maintenance: Iterable[MaintenanceWindow]
) -> bool:
    """True when the whole change window lies inside one maintenance window occurrence."""
    services = list(services)
    return any(
        occurrence.start <= window.start and window.end <= occurrence.end
        for m in maintenance
        if m.applies_to(services)
        for occurrence in m.occurrences(window)
    )


def conflicting(change: Change, others: Iterable[Change]) -> list[Change]:
    """Other approved changes on one of the same items whose windows overlap."""
    if change.window is None:
        return []
    items = set(change.configuration_items)
    return [
        other
        for other in others
        if other.id != change.id
        and other.status in HOLDING_STATUSES
        and other.window is not None
        and items & set(other.configuration_items)
        and other.window.overlaps(change.window)
    ]


def check_schedule(
    change: Change, others: Iterable[Change], freezes: Iterable[FreezeWindow]
) -> None:
    """Raise Conflict naming what stands in the way: a conflicting change, or a freeze window
    (emergencies are exempt from freezes, not from conflicts)."""
    if change.window is None:
        raise Conflict("the change has no planned window")
    clashes = conflicting(change, others)
    if clashes:
        numbers = ", ".join(sorted(c.number for c in clashes))
        raise Conflict(
            f"the window overlaps approved changes on the same items: {numbers}",
            conflicting_changes=sorted(c.number for c in clashes),
        )
    if exempt_from_freeze(change.change_type):
        return
    frozen = [f for f in freezes if f.blocks(change.window, change.services)]
    if frozen:
        names = ", ".join(sorted(f.name for f in frozen))
        raise Conflict(
            f"the window falls in a freeze: {names}", freezes=sorted(f.name for f in frozen)
        )


def exempt_from_freeze(change_type: ChangeType) -> bool:
    return change_type == "emergency"
