"""Quiet hours: a user's local window (say 22:00-07:00 in their zone, across midnight) in which
notifications wait, except for P1s.

A notification about a P1 always goes at once: a P1 is what quiet hours are not for. Any other
notification falling in the window is **deferred to the window's end** (07:00 local), not
dropped: an escalation or an assignment is still news in the morning, and nothing is silently
lost. A user who prefers silence sets `suppress`, and then non-P1 notifications in the window
are dropped. An escalation keeps climbing while someone's message waits, so the next level is
paged on time; and a deferred escalation message is not sent once its escalation has ended
(see `escalation.still_wanted`).

`weekdays` are the days a window starts on (0 = Monday), e.g. only weeknights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta

from services.notify.domain.clock import as_utc, local_date, wall_to_utc, zone
from services.notify.domain.model import Notification
from shared.contracts.incidents import Priority
from shared.errors import Invalid

EVERY_DAY: frozenset[int] = frozenset(range(7))
URGENT: frozenset[Priority] = frozenset({"P1"})


@dataclass(frozen=True)
class QuietHours:
    zone: str
    start: time
    end: time
    weekdays: frozenset[int] = EVERY_DAY
    suppress: bool = False

    def __post_init__(self) -> None:
        zone(self.zone)
        if self.start == self.end:
            raise Invalid("quiet hours must start and end at different times")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise Invalid(f"quiet hours are local times in {self.zone}")
        if not self.weekdays <= EVERY_DAY:
            raise Invalid("quiet-hours weekdays are 0 (Monday) to 6 (Sunday)")

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start


def window_at(quiet: QuietHours, at: datetime) -> tuple[datetime, datetime] | None:
    """The quiet window [start, end) in UTC that contains `at`, or None."""
    instant = as_utc(at)
    tz = zone(quiet.zone)
    today = local_date(instant, tz)
    for first_day in (today - timedelta(days=1), today):  # a window that began yesterday
        if first_day.weekday() not in quiet.weekdays:
            continue
        last_day = first_day + timedelta(days=1) if quiet.crosses_midnight else first_day
        start = wall_to_utc(first_day, quiet.start, tz)
        end = wall_to_utc(last_day, quiet.end, tz)
        if start <= instant < end:
            return start, end
    return None


def in_quiet_hours(quiet: QuietHours, at: datetime) -> bool:
    return window_at(quiet, at) is not None


def release_time(quiet: QuietHours | None, at: datetime, priority: Priority) -> datetime | None:
    """When a notification created at `at` may go out: `at` itself, the end of the quiet window
    it falls in, or None when the user suppresses notifications in quiet hours."""
    instant = as_utc(at)
    if quiet is None or priority in URGENT:
        return instant
    window = window_at(quiet, instant)
    if window is None:
        return instant
    if quiet.suppress:
        return None
    release = window[1]
    # Only a window of nearly a day that ends in a spring-forward gap can end where the next
    # one starts; then the next one's end is the release.
    while (following := window_at(quiet, release)) is not None:
        release = following[1]
    return release


def apply_quiet_hours(notification: Notification, quiet: QuietHours | None) -> Notification | None:
    """The notification with its `deliver_at` moved past the recipient's quiet hours, or None
    when it is suppressed."""
    release = release_time(quiet, notification.deliver_at, notification.priority)
    if release is None:
        return None
    return replace(notification, deliver_at=release)
