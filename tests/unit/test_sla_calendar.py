"""Business calendars with fixed dates: weekends, holidays, split days, night shifts and the DST
changes of 2026 in Europe/Berlin (03-29, 10-25) and America/New_York (03-08, 11-01)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.sla.domain.calendar import (
    BusinessCalendar,
    NoWorkingTime,
    add_business_time,
    business_seconds_between,
    business_time_between,
    is_working,
    next_working_instant,
    parse_hours,
    reach,
    working_intervals,
)

H = 3600
WEEKDAYS = "08:00-12:00, 13:00-17:00"
BERLIN = BusinessCalendar.weekly(
    "berlin-office", "Europe/Berlin", dict.fromkeys(range(5), WEEKDAYS),
    holidays=[date(2026, 4, 3), date(2026, 4, 6)],  # Good Friday, Easter Monday
)  # fmt: skip
NEW_YORK = BusinessCalendar.weekly(
    "ny-office", "America/New_York", dict.fromkeys(range(5), "09:00-17:00"),
    holidays=[date(2026, 7, 3)],
)  # fmt: skip
BERLIN_ROUND_THE_CLOCK = BusinessCalendar.weekly(
    "berlin-24x7-local", "Europe/Berlin", dict.fromkeys(range(7), "00:00-24:00")
)
NY_NIGHTS = BusinessCalendar.weekly(
    "ny-night-shift", "America/New_York", dict.fromkeys(range(7), "00:00-06:00, 22:00-24:00")
)
ALWAYS = BusinessCalendar("24x7")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- weekends, holidays, split days ---------------------------------------------------------


def test_weekend_is_skipped() -> None:
    friday_4pm = utc(2026, 3, 13, 15)  # 16:00 CET
    assert add_business_time(BERLIN, friday_4pm, 2 * H) == utc(2026, 3, 16, 8)  # Mon 09:00 CET
    assert business_seconds_between(BERLIN, friday_4pm, utc(2026, 3, 16, 8)) == 2 * H


def test_lunch_break_is_not_counted() -> None:
    monday_11am = utc(2026, 3, 16, 10)
    assert add_business_time(BERLIN, monday_11am, 2 * H) == utc(2026, 3, 16, 13)  # 14:00 CET
    assert business_seconds_between(BERLIN, utc(2026, 3, 16, 7), utc(2026, 3, 16, 17)) == 8 * H


def test_holidays_are_skipped() -> None:
    thursday_4pm = utc(2026, 4, 2, 14)  # 16:00 CEST; Friday and Monday are Easter holidays
    deadline = add_business_time(BERLIN, thursday_4pm, 8 * H)
    assert deadline == utc(2026, 4, 7, 14)  # Tuesday 16:00 CEST: 1 h Thursday + 7 h Tuesday
    assert business_seconds_between(BERLIN, thursday_4pm, deadline) == 8 * H
    assert working_intervals(BERLIN, utc(2026, 4, 3), utc(2026, 4, 7)) == []


def test_a_deadline_that_uses_up_an_interval_exactly_is_that_interval_end() -> None:
    monday_4pm = utc(2026, 3, 16, 15)
    assert add_business_time(BERLIN, monday_4pm, H) == utc(2026, 3, 16, 16)  # 17:00, not Tue 08:00
    assert add_business_time(BERLIN, utc(2026, 3, 16, 10), H) == utc(2026, 3, 16, 11)  # 12:00


def test_adding_nothing_is_the_start_itself_even_off_hours() -> None:
    saturday = utc(2026, 3, 14, 12)
    assert add_business_time(BERLIN, saturday, 0) == saturday
    assert reach(BERLIN, saturday, [timedelta(0), timedelta(hours=1)]) == [
        saturday,
        utc(2026, 3, 16, 8),
    ]


def test_next_working_instant() -> None:
    assert next_working_instant(BERLIN, utc(2026, 3, 14, 12)) == utc(2026, 3, 16, 7)
    assert next_working_instant(BERLIN, utc(2026, 3, 16, 9)) == utc(2026, 3, 16, 9)
    assert next_working_instant(BERLIN, utc(2026, 3, 16, 11)) == utc(2026, 3, 16, 12)  # lunch
    assert next_working_instant(BERLIN, utc(2026, 3, 16, 16)) == utc(2026, 3, 17, 7)  # 17:00 is out
    assert next_working_instant(ALWAYS, utc(2026, 3, 14, 3)) == utc(2026, 3, 14, 3)
    assert is_working(BERLIN, utc(2026, 3, 16, 15, 59))
    assert not is_working(BERLIN, utc(2026, 3, 16, 16))


def test_working_intervals_are_clipped_and_night_shifts_merged() -> None:
    assert working_intervals(BERLIN, utc(2026, 3, 16, 9), utc(2026, 3, 16, 14)) == [
        (utc(2026, 3, 16, 9), utc(2026, 3, 16, 11)),
        (utc(2026, 3, 16, 12), utc(2026, 3, 16, 14)),
    ]
    # 22:00-24:00 and 00:00-06:00 the next day are one shift: 23:00 EST to 11:00 UTC
    nights = working_intervals(NY_NIGHTS, utc(2026, 1, 13, 12), utc(2026, 1, 14, 12))
    assert nights == [(utc(2026, 1, 14, 3), utc(2026, 1, 14, 11))]
    assert working_intervals(ALWAYS, utc(2026, 1, 2), utc(2026, 1, 1)) == []


# --- DST --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "hours"),
    [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25), (date(2026, 3, 30), 24)],
)
def test_a_local_day_round_the_clock_is_as_long_as_the_clocks_say(day: date, hours: int) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    midnight = datetime.combine(day, time(), tzinfo=berlin)
    next_midnight = datetime.combine(day + timedelta(days=1), time(), tzinfo=berlin)
    cal = BERLIN_ROUND_THE_CLOCK
    assert business_time_between(cal, midnight, next_midnight) == timedelta(hours=hours)
    assert add_business_time(cal, midnight, timedelta(hours=hours)) == next_midnight
    days_around = working_intervals(
        cal, midnight - timedelta(days=1), next_midnight + timedelta(days=1)
    )
    assert len(days_around) == 1  # consecutive days touch: one interval


def test_berlin_spring_forward_weekend_keeps_office_hours_in_local_time() -> None:
    friday_4pm_cet = utc(2026, 3, 27, 15)
    deadline = add_business_time(BERLIN, friday_4pm_cet, 2 * H)
    assert deadline == utc(2026, 3, 30, 7)  # Monday 09:00 CEST, UTC+2 now
    assert business_seconds_between(BERLIN, friday_4pm_cet, deadline) == 2 * H
    assert next_working_instant(BERLIN, utc(2026, 3, 28)) == utc(2026, 3, 30, 6)


def test_berlin_fall_back_weekend() -> None:
    friday_4pm_cest = utc(2026, 10, 23, 14)
    assert add_business_time(BERLIN, friday_4pm_cest, 2 * H) == utc(2026, 10, 26, 8)  # 09:00 CET


def test_new_york_spring_forward_and_fall_back() -> None:
    friday_4pm_est = utc(2026, 3, 6, 21)
    assert add_business_time(NEW_YORK, friday_4pm_est, 2 * H) == utc(2026, 3, 9, 14)  # 10:00 EDT
    friday_4pm_edt = utc(2026, 10, 30, 20)
    assert add_business_time(NEW_YORK, friday_4pm_edt, 2 * H) == utc(2026, 11, 2, 15)  # 10:00 EST


@pytest.mark.parametrize(
    ("night_start", "night_end", "hours"),
    [
        (utc(2026, 3, 8, 3), utc(2026, 3, 8, 10), 7),  # 22:00 EST Sat -> 06:00 EDT Sun: 7 h
        (utc(2026, 11, 1, 2), utc(2026, 11, 1, 11), 9),  # 22:00 EDT Sat -> 06:00 EST Sun: 9 h
    ],
)
def test_new_york_night_shift_across_the_change(
    night_start: datetime, night_end: datetime, hours: int
) -> None:
    window = (night_start - timedelta(hours=4), night_end + timedelta(hours=4))
    assert working_intervals(NY_NIGHTS, *window) == [(night_start, night_end)]
    assert add_business_time(NY_NIGHTS, night_start, hours * H) == night_end


def test_boundaries_inside_the_changed_hour() -> None:
    # 02:30 does not exist on 2026-03-29 in Berlin: it maps to the jump (01:00 UTC), so a
    # 01:00-02:30 span lasts one real hour. 02:30 happens twice on 2026-10-25: the first counts.
    odd = BusinessCalendar.weekly("odd", "Europe/Berlin", {6: "01:00-02:30, 03:00-04:00"})
    assert working_intervals(odd, utc(2026, 3, 28, 12), utc(2026, 3, 29, 12)) == [
        (utc(2026, 3, 29, 0), utc(2026, 3, 29, 2)),  # 01:00 CET..04:00 CEST, touching at the jump
    ]
    assert working_intervals(odd, utc(2026, 10, 24, 12), utc(2026, 10, 25, 12)) == [
        (utc(2026, 10, 24, 23), utc(2026, 10, 25, 0, 30)),  # 01:00 CEST..first 02:30 CEST
        (utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)),  # 03:00..04:00 CET
    ]


# --- long horizons and bad calendars ----------------------------------------------------------


def test_long_horizon_is_exact() -> None:
    start = utc(2026, 1, 1)
    three_years = timedelta(hours=8 * 700)
    deadline = add_business_time(BERLIN, start, three_years)
    assert business_time_between(BERLIN, start, deadline) == three_years
    assert is_working(BERLIN, deadline - timedelta(microseconds=1))


def test_a_calendar_without_working_time_is_a_clear_error() -> None:
    every_day_off = frozenset(date(2026, 1, 1) + timedelta(days=i) for i in range(4 * 366))
    closed = BusinessCalendar("closed", holidays=every_day_off)
    with pytest.raises(NoWorkingTime, match="'closed' has no working time within 1098 days"):
        add_business_time(closed, utc(2026, 1, 1), 60)
    with pytest.raises(NoWorkingTime):
        next_working_instant(closed, utc(2026, 1, 1))
    assert business_time_between(closed, utc(2026, 1, 1), utc(2027, 1, 1)) == timedelta(0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"zone": "Mars/Olympus"}, "unknown time zone"),
        ({"week": ((),) * 7}, "no working hours"),
        ({"week": (((3600, 1800),),) * 7}, "in order"),
        ({"week": (((0, 7200), (3600, 9000)),) * 7}, "non-overlapping"),
        ({"week": (((0, 90_000),),) * 7}, "within 00:00-24:00"),
        ({"week": ((),) * 6}, "7 weekdays"),
    ],
)
def test_invalid_calendars_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BusinessCalendar("bad", **kwargs)  # type: ignore[arg-type]


def test_parse_hours() -> None:
    assert parse_hours("08:00-12:00, 13:00-17:30") == ((8 * H, 12 * H), (13 * H, 17 * H + 1800))
    assert parse_hours("22:00-24:00") == ((22 * H, 24 * H),)
    assert parse_hours("") == ()
    for bad in ("8-12", "08:00-24:30", "25:00-26:00", "08:61-09:00"):
        with pytest.raises(ValueError):
            parse_hours(bad)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_business_time(BERLIN, datetime(2026, 3, 16, 9), 60)
    with pytest.raises(ValueError, match="negative"):
        add_business_time(BERLIN, utc(2026, 3, 16, 9), -1)
