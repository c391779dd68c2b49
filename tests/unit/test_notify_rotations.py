"""On-call rotations and quiet hours in IANA zones: handoffs stay at local wall-clock time
across DST, overrides cover ranges, quiet windows cross midnight, P1 is never held back."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notify.domain.clock import wall_to_utc
from services.notify.domain.model import Notification
from services.notify.domain.quiet_hours import (
    QuietHours,
    apply_quiet_hours,
    in_quiet_hours,
    release_time,
    window_at,
)
from services.notify.domain.rotations import (
    Override,
    Rotation,
    next_handoff,
    on_call,
    shift_at,
    who,
)
from shared.errors import Invalid

H = timedelta(hours=1)
US = timedelta(microseconds=1)
BERLIN = ZoneInfo("Europe/Berlin")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


OPS = Rotation(
    id="ops", name="Ops", zone="Europe/Berlin", participants=("alice", "bob", "carol"),
    handoff_weekday=0, handoff_time=time(9), starts=date(2026, 3, 4),
)  # fmt: skip  # a Wednesday: the first handoff is Monday 9 March 09:00, to alice


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(2026, 3, 9, 7, 59), "carol"),  # before the first handoff: the order runs backwards
        (utc(2026, 3, 9, 8, 0), "alice"),  # 09:00 CET
        (utc(2026, 3, 15, 23, 0), "alice"),
        (utc(2026, 3, 16, 7, 59, 59), "alice"),
        (utc(2026, 3, 16, 8, 0), "bob"),
        (utc(2026, 3, 23, 8, 0), "carol"),
        (utc(2026, 3, 30, 6, 59), "carol"),  # summer time from 29 March: 09:00 is 07:00 UTC
        (utc(2026, 3, 30, 7, 0), "alice"),
        (utc(2026, 10, 26, 7, 59), "carol"),  # winter time again from 25 October
        (utc(2026, 10, 26, 8, 0), "alice"),
    ],
)
def test_who_is_on_call(at: datetime, expected: str) -> None:
    assert who(OPS, at) == (expected, None)


@pytest.mark.parametrize(
    ("at", "hours"),
    [(utc(2026, 3, 25), 167), (utc(2026, 10, 20), 169), (utc(2026, 6, 10), 168)],
)
def test_a_week_across_a_dst_change_is_167_or_169_hours(at: datetime, hours: int) -> None:
    shift = shift_at(OPS, at)
    assert shift.end - shift.start == hours * H
    assert shift.start.astimezone(BERLIN).time() == shift.end.astimezone(BERLIN).time() == time(9)


def test_a_handoff_the_clock_skips_happens_at_the_jump() -> None:
    sunday = replace(OPS, handoff_weekday=6, handoff_time=time(2, 30))  # 29 March: 02:00 -> 03:00
    assert shift_at(sunday, utc(2026, 3, 29, 1, 30)).start == utc(2026, 3, 29, 1, 0)
    fall_back = replace(OPS, handoff_weekday=6, handoff_time=time(2, 30))  # 25 Oct: 02:30 twice
    assert shift_at(fall_back, utc(2026, 10, 25, 2, 0)).start == utc(2026, 10, 25, 0, 30)


def test_overrides_cover_a_range_and_the_last_added_wins() -> None:
    covered = OPS.with_override(Override("dave", utc(2026, 3, 17, 10), utc(2026, 3, 17, 14)))
    covered = covered.with_override(Override("erin", utc(2026, 3, 17, 12), utc(2026, 3, 17, 13)))
    assert who(covered, utc(2026, 3, 17, 9, 59))[0] == "bob"
    assert who(covered, utc(2026, 3, 17, 10))[0] == "dave"
    assert who(covered, utc(2026, 3, 17, 12, 30))[0] == "erin"
    assert who(covered, utc(2026, 3, 17, 13))[0] == "dave"
    assert who(covered, utc(2026, 3, 17, 14))[0] == "bob"
    now = on_call(covered, utc(2026, 3, 17, 11))
    assert (now.user, now.override.user if now.override else None, now.until) == (
        "dave", "dave", utc(2026, 3, 17, 12),
    )  # fmt: skip
    changes = []
    at = utc(2026, 3, 17, 0)
    while (handoff := next_handoff(covered, at)) and handoff.at < utc(2026, 3, 24, 12):
        changes.append((handoff.at, handoff.from_user, handoff.to_user))
        at = handoff.at
    assert changes == [
        (utc(2026, 3, 17, 10), "bob", "dave"),
        (utc(2026, 3, 17, 12), "dave", "erin"),
        (utc(2026, 3, 17, 13), "erin", "dave"),
        (utc(2026, 3, 17, 14), "dave", "bob"),
        (utc(2026, 3, 23, 8), "bob", "carol"),
    ]


def test_a_single_participant_hands_off_only_to_overrides() -> None:
    solo = replace(OPS, participants=("alice",))
    assert next_handoff(solo, utc(2026, 3, 17)) is None
    assert on_call(solo, utc(2026, 3, 17)).until is None
    covered = solo.with_override(Override("alice", utc(2026, 4, 1), utc(2026, 4, 2)))
    assert next_handoff(covered, utc(2026, 3, 17)) is None  # covering oneself changes nothing
    covered = covered.with_override(Override("bob", utc(2026, 6, 1), utc(2026, 6, 2)))
    handoff = next_handoff(covered, utc(2026, 3, 17))
    assert handoff is not None and (handoff.at, handoff.to_user) == (utc(2026, 6, 1), "bob")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"participants": ()}, "at least one participant"),
        ({"zone": "Mars/Olympus"}, "unknown time zone"),
        ({"handoff_weekday": 7}, "0 \\(Monday\\) to 6"),
        ({"handoff_time": time(9, tzinfo=UTC)}, "local to"),
    ],
)
def test_bad_rotations_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(OPS, **changes)


def test_an_override_must_end_after_it_starts() -> None:
    with pytest.raises(Invalid, match="end after it starts"):
        Override("dave", utc(2026, 3, 17, 10), utc(2026, 3, 17, 10))


instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
)
zones = st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"])


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    at=instants,
    zone=zones,
    weekday=st.integers(0, 6),
    clock=st.sampled_from([time(0), time(2, 30), time(9), time(23, 45)]),
    people=st.integers(1, 4),
    overrides=st.lists(st.tuples(instants, st.integers(1, 72)), max_size=3),
)
def test_next_handoff_is_the_first_change_of_who_is_on_call(
    at: datetime, zone: str, weekday: int, clock: time, people: int,
    overrides: list[tuple[datetime, int]],
) -> None:  # fmt: skip
    rotation = Rotation(
        "r", "r", zone, tuple(f"p{i}" for i in range(people)), weekday, clock, date(2026, 2, 1),
        tuple(Override(f"o{i}", start, start + hours * H) for i, (start, hours) in enumerate(overrides)),
    )  # fmt: skip
    current, _ = who(rotation, at)
    shift = shift_at(rotation, at)
    assert shift.start <= at < shift.end
    assert shift.start.astimezone(ZoneInfo(zone)).weekday() == weekday or clock == time(2, 30)
    handoff = next_handoff(rotation, at)
    if handoff is None:
        assert people == 1
        return
    assert handoff.at > at and handoff.from_user == current
    assert who(rotation, handoff.at)[0] == handoff.to_user != current
    assert who(rotation, handoff.at - US)[0] == current
    span = handoff.at - at
    for k in range(1, 8):  # samples in between: nobody else
        assert who(rotation, at + span * k / 8)[0] == current


# Quiet hours.

NIGHT = QuietHours("Europe/Berlin", time(22), time(7))


@pytest.mark.parametrize(
    ("quiet", "at", "release"),
    [
        (NIGHT, utc(2026, 3, 17, 20, 59), utc(2026, 3, 17, 20, 59)),  # 21:59 CET: not yet
        (NIGHT, utc(2026, 3, 17, 21, 0), utc(2026, 3, 18, 6, 0)),  # 22:00 -> 07:00 next day
        (NIGHT, utc(2026, 3, 18, 2, 0), utc(2026, 3, 18, 6, 0)),  # after midnight
        (NIGHT, utc(2026, 3, 18, 6, 0), utc(2026, 3, 18, 6, 0)),  # 07:00: the window is over
        (NIGHT, utc(2026, 3, 28, 22, 0), utc(2026, 3, 29, 5, 0)),  # ends 07:00 CEST: 8 hours
        (NIGHT, utc(2026, 10, 24, 21, 0), utc(2026, 10, 25, 6, 0)),  # ends 07:00 CET: 10 hours
        (QuietHours("Europe/Berlin", time(22), time(2, 30)), utc(2026, 3, 28, 23, 0),
         utc(2026, 3, 29, 1, 0)),  # 02:30 does not exist that night: the jump to 03:00
        (QuietHours("Europe/Berlin", time(12), time(13)), utc(2026, 3, 17, 11, 30),
         utc(2026, 3, 17, 12, 0)),  # a lunch break, not across midnight
        (QuietHours("America/New_York", time(22), time(6)), utc(2026, 3, 8, 5, 0),
         utc(2026, 3, 8, 10, 0)),  # New York springs forward that night: 06:00 EDT
    ],
)  # fmt: skip
def test_a_non_p1_notification_waits_for_the_end_of_the_window(
    quiet: QuietHours, at: datetime, release: datetime
) -> None:
    assert release_time(quiet, at, "P2") == release
    assert in_quiet_hours(quiet, at) == (release != at)
    assert release_time(quiet, at, "P1") == at  # never for P1
    assert release_time(replace(quiet, suppress=True), at, "P3") == (None if release != at else at)
    assert release_time(None, at, "P4") == at


def test_weekdays_are_the_nights_a_window_starts_on() -> None:
    weeknights = replace(NIGHT, weekdays=frozenset({6, 0, 1, 2, 3}))  # Sunday to Thursday nights
    friday_night = utc(2026, 3, 20, 23, 0)
    sunday_night = utc(2026, 3, 22, 23, 0)
    monday_early = utc(2026, 3, 23, 4, 0)
    assert not in_quiet_hours(weeknights, friday_night)
    assert window_at(weeknights, sunday_night) == (utc(2026, 3, 22, 21, 0), utc(2026, 3, 23, 6, 0))
    assert in_quiet_hours(weeknights, monday_early)


def test_quiet_hours_move_a_notification_and_keep_it_otherwise_intact() -> None:
    at = utc(2026, 3, 17, 23, 0)
    note = Notification(
        key="k", event_id="e", event_type="t", ticket_id="INC1", priority="P3", recipient="u",
        channel="email", reason="subscription", created_at=at, deliver_at=at,
    )  # fmt: skip
    moved = apply_quiet_hours(note, NIGHT)
    assert moved == replace(note, deliver_at=utc(2026, 3, 18, 6, 0)) and moved.deferred
    assert apply_quiet_hours(note, replace(NIGHT, suppress=True)) is None
    assert apply_quiet_hours(replace(note, priority="P1"), NIGHT) == replace(note, priority="P1")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: QuietHours("Europe/Berlin", time(7), time(7)), "different times"),
        (lambda: QuietHours("Nowhere/Land", time(22), time(7)), "unknown time zone"),
        (lambda: QuietHours("UTC", time(22), time(7), frozenset({7})), "weekdays"),
    ],
)
def test_bad_quiet_hours_are_refused(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


@settings(max_examples=80, derandomize=True, deadline=None)
@given(
    at=instants,
    zone=zones,
    start=st.integers(0, 95),
    length=st.integers(1, 95),
    days=st.frozensets(st.integers(0, 6), min_size=1),
)
def test_a_released_notification_is_never_inside_quiet_hours(
    at: datetime, zone: str, start: int, length: int, days: frozenset[int]
) -> None:
    begin = time(start // 4, 15 * (start % 4))
    end_q = (start + length) % 96
    quiet = QuietHours(zone, begin, time(end_q // 4, 15 * (end_q % 4)), days)
    release = release_time(quiet, at, "P3")
    assert release is not None and release >= at
    if release > at:
        window = window_at(quiet, at)
        assert window is not None and window[0] <= at < window[1] <= release
    assert not in_quiet_hours(quiet, release)


def test_wall_clock_conversion_takes_the_first_of_a_repeated_time() -> None:
    assert wall_to_utc(date(2026, 10, 25), time(2, 30), BERLIN) == utc(2026, 10, 25, 0, 30)
    assert wall_to_utc(date(2026, 3, 29), time(2, 30), BERLIN) == utc(2026, 3, 29, 1, 0)
    assert wall_to_utc(date(2026, 3, 29), time(3, 0), BERLIN) == utc(2026, 3, 29, 1, 0)


def test_a_window_ending_where_the_next_begins_releases_after_both() -> None:
    # 02:45 to 02:30 the next day; on 29 March both are in the skipped hour: the jump instant.
    nearly_all_day = QuietHours("Europe/Berlin", time(2, 45), time(2, 30))
    assert window_at(nearly_all_day, utc(2026, 3, 28, 12))[1] == utc(2026, 3, 29, 1)  # type: ignore[index]
    assert release_time(nearly_all_day, utc(2026, 3, 28, 12), "P2") == utc(2026, 3, 30, 0, 30)
