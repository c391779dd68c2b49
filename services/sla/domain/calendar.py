"""Business calendars: when an SLA clock counts.

A calendar is working hours per weekday in an IANA time zone, minus holiday dates (or 24x7).
Hours are local wall-clock times, converted to UTC for each local date on its own, so 08:00-17:00
is nine real hours on either side of a DST change and 00:00-24:00 is 23 or 25 hours on the days
the clocks change. Instants in must be timezone-aware; instants out are UTC. Business time is a
`timedelta`: exact to the microsecond, so adding and measuring are exact inverses.

A wall-clock boundary maps to the first instant at which the local clock shows that time. A time
skipped by spring-forward therefore maps to the instant of the jump, and a time repeated by
fall-back to its first occurrence; either way a day's intervals stay in order.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY = 86_400
# A calendar with no working time for three years is misconfigured (say, every date a holiday);
# searching further would only hide that.
MAX_IDLE_DAYS = 3 * 366
ZERO = timedelta(0)

Span = tuple[int, int]  # [start, end) in seconds past local midnight; end may be 86400 (24:00)
Interval = tuple[datetime, datetime]  # [start, end) in UTC
ALL_DAY: tuple[Span, ...] = ((0, DAY),)

_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class NoWorkingTime(ValueError):
    """The calendar has no working time within MAX_IDLE_DAYS of the instant asked about."""


@dataclass(frozen=True)
class BusinessCalendar:
    """`week[0]` is Monday's working spans, `week[6]` Sunday's; the default is 24x7 in UTC."""

    name: str
    zone: str = "UTC"
    week: tuple[tuple[Span, ...], ...] = (ALL_DAY,) * 7
    holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"calendar {self.name!r}: unknown time zone {self.zone!r}") from None
        if len(self.week) != 7:
            raise ValueError(f"calendar {self.name!r}: needs working hours for 7 weekdays")
        for weekday, spans in enumerate(self.week):
            previous_end = 0
            for start, end in spans:
                if not (previous_end <= start < end <= DAY):
                    raise ValueError(
                        f"calendar {self.name!r}: weekday {weekday} spans must be in order, "
                        f"non-overlapping and within 00:00-24:00, got {spans}"
                    )
                previous_end = end
        if not any(self.week):
            raise ValueError(f"calendar {self.name!r} has no working hours on any weekday")

    @classmethod
    def weekly(
        cls, name: str, zone: str, hours: Mapping[int, str], holidays: Iterable[date] = ()
    ) -> BusinessCalendar:
        """`hours`: weekday (0 = Monday) -> "08:00-12:00, 13:00-17:00"; absent days are closed."""
        week = tuple(parse_hours(hours.get(weekday, "")) for weekday in range(7))
        return cls(name=name, zone=zone, week=week, holidays=frozenset(holidays))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    @property
    def always_open(self) -> bool:
        """24x7 without holidays: business time is plain elapsed time."""
        return not self.holidays and all(spans == ALL_DAY for spans in self.week)


def parse_hours(text: str) -> tuple[Span, ...]:
    """ "08:00-12:00, 13:00-17:00" -> ((28800, 43200), (46800, 61200)); "24:00" ends a day."""
    spans = []
    for part in filter(str.strip, text.split(",")):
        match = _SPAN.match(part)
        if not match:
            raise ValueError(f"working hours must look like 08:00-17:00, got {part.strip()!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if m1 > 59 or m2 > 59 or h1 > 23 or (h2, m2) > (24, 0):
            raise ValueError(f"not a time of day in {part.strip()!r}")
        spans.append((h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60))
    return tuple(spans)


def working_intervals(
    calendar: BusinessCalendar, start_utc: datetime, end_utc: datetime
) -> list[Interval]:
    """The working intervals within [start, end), clipped to it, merged where they touch."""
    start, end = as_utc(start_utc), as_utc(end_utc)
    if end <= start:
        return []
    if calendar.always_open:
        return [(start, end)]
    return [(a, min(b, end)) for a, b in _intervals(calendar, start, until=end) if a < end]


def business_time_between(calendar: BusinessCalendar, a: datetime, b: datetime) -> timedelta:
    """Working time in [a, b); zero when b is not after a."""
    start, end = as_utc(a), as_utc(b)
    if end <= start:
        return ZERO
    if calendar.always_open:
        return end - start
    return sum((y - x for x, y in working_intervals(calendar, start, end)), ZERO)


def business_seconds_between(calendar: BusinessCalendar, a: datetime, b: datetime) -> float:
    return business_time_between(calendar, a, b).total_seconds()


def add_business_time(
    calendar: BusinessCalendar, start_utc: datetime, amount: timedelta | float
) -> datetime:
    """The first instant by which `amount` of working time has passed since `start`.

    It lies inside working hours, or is the end of an interval when the amount runs out exactly
    there (17:00, not 08:00 the next working day). Zero is `start` itself: nothing is left.
    """
    return reach(calendar, start_utc, [_duration(amount)])[0]


def reach(
    calendar: BusinessCalendar, start_utc: datetime, amounts: Sequence[timedelta]
) -> list[datetime]:
    """`add_business_time` for several amounts in one pass over the calendar (a timer's warning
    levels and deadline), in the order given."""
    start = as_utc(start_utc)
    if any(amount < ZERO for amount in amounts):
        raise ValueError("business time to add must not be negative")
    results = [start] * len(amounts)
    if calendar.always_open:
        return [start + amount for amount in amounts]
    pending = deque(sorted((i for i, x in enumerate(amounts) if x > ZERO), key=amounts.__getitem__))
    used = ZERO
    intervals = _intervals(calendar, start)
    while pending:
        a, b = next(intervals)  # unbounded: it raises NoWorkingTime rather than running out
        while pending and amounts[pending[0]] - used <= b - a:
            index = pending.popleft()
            results[index] = a + (amounts[index] - used)
        used += b - a
    return results


def next_working_instant(calendar: BusinessCalendar, t: datetime) -> datetime:
    """`t` itself when it is within working hours, else the start of the next working interval
    (an interval's end is outside it)."""
    instant = as_utc(t)
    if calendar.always_open:
        return instant
    return next(_intervals(calendar, instant))[0]


def is_working(calendar: BusinessCalendar, t: datetime) -> bool:
    instant = as_utc(t)
    # A date's intervals lie between its midnight and the next, so t's own local date decides.
    local_date = instant.astimezone(calendar.tz).date()
    return any(a <= instant < b for a, b in _day(calendar, local_date))


def _intervals(
    calendar: BusinessCalendar, start: datetime, until: datetime | None = None
) -> Iterator[Interval]:
    """Working intervals ending after `start`, clipped to begin no earlier, in order, touching
    ones merged (22:00-24:00 then 00:00-06:00 is one night shift). Runs through `until`'s local
    date; unbounded, it raises NoWorkingTime after MAX_IDLE_DAYS without working time."""
    zone = calendar.tz
    day = start.astimezone(zone).date()
    last_day = until.astimezone(zone).date() if until is not None else None
    current: Interval | None = None
    idle = 0
    while last_day is None or day <= last_day:
        # A closed weekday costs no time-zone arithmetic, a holiday only a cached set lookup.
        intervals = _day(calendar, day) if calendar.week[day.weekday()] else ()
        if not intervals:
            if current is not None:
                yield current  # nothing later can touch it: a whole day lies between
                current = None
            idle += 1
            if last_day is None and idle > MAX_IDLE_DAYS:
                raise NoWorkingTime(
                    f"calendar {calendar.name!r} has no working time within {MAX_IDLE_DAYS} days "
                    f"from {day - timedelta(days=idle - 1)}"
                )
        idle = 0 if intervals else idle
        for a, b in intervals:
            if b <= start:
                continue
            a = max(a, start)
            if current is not None and a <= current[1]:
                current = (current[0], max(current[1], b))
                continue
            if current is not None:
                yield current
            current = (a, b)
        day += timedelta(days=1)
    if current is not None:
        yield current


# Pure, so memoised: every timer on a calendar asks about the same coming days again and again.
@lru_cache(maxsize=16_384)
def _day(calendar: BusinessCalendar, day: date) -> tuple[Interval, ...]:
    """A local date's working intervals in UTC (empty on holidays and closed weekdays)."""
    if day in calendar.holidays:
        return ()
    zone = calendar.tz
    intervals = []
    for start, end in calendar.week[day.weekday()]:
        a, b = _wall_to_utc(day, start, zone), _wall_to_utc(day, end, zone)
        if a < b:  # a span wholly inside a spring-forward gap never happens on the clock
            intervals.append((a, b))
    return tuple(intervals)


def _wall_to_utc(day: date, second: int, zone: ZoneInfo) -> datetime:
    """The first instant at which the local clock shows `second` past midnight of `day`."""
    wall = datetime.combine(day, time()) + timedelta(seconds=second)
    instant = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the first of a repeated time
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    return _jump_over(wall, zone)


def _jump_over(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant the clock jumped over the nonexistent local time `wall` (spring-forward)."""
    # fold=1 reads the gap with the offset from after the jump, which lands before it; fold=0
    # with the offset from before, which lands after. Bisect the whole seconds in between
    # (time zone transitions fall on whole seconds).
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    offset_after = after.astimezone(zone).utcoffset()
    second = timedelta(seconds=1)
    while after - before > second:
        middle = before + ((after - before) // second // 2) * second
        if middle.astimezone(zone).utcoffset() == offset_after:
            after = middle
        else:
            before = middle
    return after


def as_utc(instant: datetime) -> datetime:
    """`instant` in UTC; naive datetimes are refused (their zone would be a guess)."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"instants must be timezone-aware, got {instant!r}")
    return instant.astimezone(UTC)


def _duration(amount: timedelta | float) -> timedelta:
    return amount if isinstance(amount, timedelta) else timedelta(seconds=amount)
