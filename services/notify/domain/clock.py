"""Local wall-clock times in IANA zones, as UTC instants.

On-call handoffs and quiet hours are written as local times ("Monday 09:00 Europe/Berlin",
"22:00-07:00"), so they stay put on the clock across DST. A local time the clock skips (spring
forward) maps to the instant of the jump; one it shows twice (fall back) to its first occurrence.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SECOND = timedelta(seconds=1)


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; ValueError naming it when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def as_utc(instant: datetime) -> datetime:
    """`instant` in UTC; naive datetimes are refused (their zone would be a guess)."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"instants must be timezone-aware, got {instant!r}")
    return instant.astimezone(UTC)


def wall_to_utc(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """The first instant at which the local clock in `tz` shows `clock` on `day`."""
    wall = datetime.combine(day, clock.replace(tzinfo=None))
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return min(first, wall.replace(tzinfo=tz, fold=1).astimezone(UTC))
    # Skipped by spring-forward: fold=1 reads it with the offset from after the jump, which lands
    # before the jump; fold=0 with the offset from before, which lands after. Bisect the whole
    # seconds in between (zone transitions fall on whole seconds).
    before = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    after = first
    offset_after = after.astimezone(tz).utcoffset()
    while after - before > SECOND:
        middle = before + ((after - before) // SECOND // 2) * SECOND
        if middle.astimezone(tz).utcoffset() == offset_after:
            after = middle
        else:
            before = middle
    return after


def local_date(instant: datetime, tz: ZoneInfo) -> date:
    return as_utc(instant).astimezone(tz).date()
