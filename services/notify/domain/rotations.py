"""On-call rotations: who is on call at an instant, and when that changes.

A rotation hands off weekly at a local weekday and time in its IANA zone (Monday 09:00
Europe/Berlin stays 09:00 on the wall clock, so the week across a DST change is 167 or 169
hours). Participants take turns in order: the first starts at the first handoff on or after
`starts`, and the order repeats forever (before that first handoff it runs backwards, so
someone is always on call). An override puts someone else on call for a time range; where
overrides overlap, the one added last wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from itertools import count

from services.notify.domain.clock import as_utc, local_date, wall_to_utc, zone
from shared.errors import Conflict, Invalid

WEEK = timedelta(days=7)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Override:
    """`user` is on call in [start, end) instead of the scheduled participant."""

    user: str
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if not self.user.strip():
            raise Invalid("an override names the user who covers")
        if as_utc(self.end) <= as_utc(self.start):
            raise Invalid(f"an override must end after it starts ({self.start} - {self.end})")

    def covers(self, at: datetime) -> bool:
        return self.start <= at < self.end


@dataclass(frozen=True)
class Rotation:
    id: str
    name: str
    zone: str
    participants: tuple[str, ...]
    handoff_weekday: int  # 0 = Monday
    handoff_time: time
    starts: date  # local date; the first handoff on or after it starts participants[0]
    overrides: tuple[Override, ...] = ()

    def __post_init__(self) -> None:
        zone(self.zone)
        if not self.participants or not all(p.strip() for p in self.participants):
            raise Invalid(f"rotation {self.id!r}: needs at least one participant")
        if not 0 <= self.handoff_weekday <= 6:
            raise Invalid(f"rotation {self.id!r}: handoff weekday is 0 (Monday) to 6 (Sunday)")
        if self.handoff_time.tzinfo is not None:
            raise Invalid(f"rotation {self.id!r}: the handoff time is local to {self.zone}")

    @property
    def first_handoff(self) -> date:
        return self.starts + timedelta(days=(self.handoff_weekday - self.starts.weekday()) % 7)

    def handoff(self, shift: int) -> datetime:
        """The UTC instant shift number `shift` starts (0 is participants[0]'s first)."""
        day = self.first_handoff + shift * WEEK
        return wall_to_utc(day, self.handoff_time, zone(self.zone))

    def with_override(self, override: Override) -> Rotation:
        return replace(self, overrides=(*self.overrides, override))


def add_override(rotation: Rotation, override: Override, *, now: datetime, cap: int) -> Rotation:
    """`rotation` with `override` added, keeping its overrides bounded: at most `cap` that have
    not ended at `now` (one more is refused: Conflict naming the cap), and of those that have
    ended, the `cap` that ended last (older ones are dropped; they decide nothing from now on)."""
    instant = as_utc(now)
    ongoing = [o for o in rotation.overrides if as_utc(o.end) > instant]
    if as_utc(override.end) > instant and len(ongoing) >= cap:
        raise Conflict(
            f"rotation {rotation.id!r} has {len(ongoing)} overrides that have not ended, the cap "
            f"of {cap} (max_rotation_overrides); add more once some have ended",
            cap=cap,
            ongoing=len(ongoing),
        )
    updated = rotation.with_override(override)
    ended = sorted(
        (o for o in updated.overrides if as_utc(o.end) <= instant), key=lambda o: as_utc(o.end)
    )
    dropped = {id(o) for o in ended[: max(len(ended) - cap, 0)]}
    return replace(updated, overrides=tuple(o for o in updated.overrides if id(o) not in dropped))


@dataclass(frozen=True)
class Shift:
    """A scheduled turn: `user` is on call in [start, end), overrides aside."""

    user: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class OnCall:
    user: str
    override: Override | None  # the override in force, if any
    until: datetime | None  # the next handoff; None when nobody else ever takes over


@dataclass(frozen=True)
class Handoff:
    at: datetime
    from_user: str
    to_user: str


def shift_at(rotation: Rotation, at: datetime) -> Shift:
    """The scheduled shift that contains `at`."""
    shift = _shift_containing(rotation, as_utc(at))
    user = rotation.participants[shift % len(rotation.participants)]
    return Shift(user, rotation.handoff(shift), rotation.handoff(shift + 1))


def scheduled(rotation: Rotation, at: datetime) -> str:
    return shift_at(rotation, at).user


def who(rotation: Rotation, at: datetime) -> tuple[str, Override | None]:
    """Who is on call at `at`, and the override that put them there, if any."""
    instant = as_utc(at)
    for override in reversed(rotation.overrides):  # the last added wins
        if override.covers(instant):
            return override.user, override
    return scheduled(rotation, instant), None


def on_call(rotation: Rotation, at: datetime) -> OnCall:
    user, override = who(rotation, at)
    change = next_handoff(rotation, at)
    return OnCall(user, override, change.at if change else None)


def next_handoff(rotation: Rotation, at: datetime) -> Handoff | None:
    """The first instant after `at` at which someone else is on call; None when that never
    happens (a single participant and no override ahead)."""
    instant = as_utc(at)
    current, _ = who(rotation, instant)
    for boundary in _boundaries(rotation, instant):
        successor, _ = who(rotation, boundary)
        if successor != current:
            return Handoff(boundary, current, successor)
    return None


def _boundaries(rotation: Rotation, after: datetime) -> Iterator[datetime]:
    """Every instant after `after` at which who is on call may change, in order: the override
    edges, and enough scheduled handoffs beyond the last of them to go round the participants."""
    edges = sorted(
        {t for o in rotation.overrides for t in (as_utc(o.start), as_utc(o.end)) if t > after}
    )
    handoffs = _handoffs_after(rotation, after)
    upcoming = next(handoffs)
    beyond_edges = 0
    while beyond_edges <= len(rotation.participants):
        if edges and edges[0] <= upcoming:
            edge = edges.pop(0)
            if edge == upcoming:
                continue  # the handoff is yielded next
            yield edge
            continue
        if edges and any(o.covers(upcoming) for o in rotation.overrides):
            # Overrides decide who is on call until their next edge, so no handoff before it
            # changes anything: skip to the first one after it (a long override would otherwise
            # be walked a week at a time).
            handoffs = _handoffs_after(rotation, edges[0])
            upcoming = next(handoffs)
            continue
        yield upcoming
        upcoming = next(handoffs)
        if not edges:
            beyond_edges += 1


def _handoffs_after(rotation: Rotation, after: datetime) -> Iterator[datetime]:
    shifts = count(_shift_containing(rotation, after) + 1)
    return (rotation.handoff(n) for n in shifts)


def _shift_containing(rotation: Rotation, instant: datetime) -> int:
    days = (local_date(instant, zone(rotation.zone)) - rotation.first_handoff).days
    shift = days // 7  # the shift whose handoff falls in the same local week
    return shift - 1 if instant < rotation.handoff(shift) else shift
