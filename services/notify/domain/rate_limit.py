"""Rate limits per recipient x channel, as token buckets.

`RateLimit(rate=10, per=1 hour, burst=5)`: up to 5 messages at once, then one every 6 minutes on
average. A message over the limit is not dropped at once: it takes the next free slot (the
bucket goes into debt), so a short burst arrives spread out and in order. Only when its slot
would be more than `max_delay` away is it dropped: a flood of alerts is better summarised by the
ticket than delivered tomorrow. P1 messages count against the bucket but are never held back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.notify.domain.clock import as_utc
from shared.contracts.incidents import Priority
from shared.errors import Invalid


@dataclass(frozen=True)
class RateLimit:
    rate: int  # messages per `per`, sustained
    per: timedelta
    burst: int  # messages at once, from a full bucket
    max_delay: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.rate < 1 or self.burst < 1 or self.per <= timedelta(0):
            raise Invalid("a rate limit needs a positive rate, period and burst")
        if self.max_delay < timedelta(0):
            raise Invalid("a rate limit's max_delay must not be negative")

    @property
    def interval(self) -> timedelta:
        """The time one token takes to refill."""
        return self.per / self.rate


@dataclass(frozen=True)
class Bucket:
    """Tokens at `updated_at`; negative while slots ahead are already promised."""

    tokens: float
    updated_at: datetime


def full(limit: RateLimit, now: datetime) -> Bucket:
    return Bucket(float(limit.burst), as_utc(now))


def take(
    limit: RateLimit, bucket: Bucket | None, now: datetime, priority: Priority = "P5"
) -> tuple[Bucket, datetime | None]:
    """Take a token for a message at `now`: the bucket after, and when the message may go
    (`now`, a later slot, or None when that slot is beyond `max_delay` and it is dropped; a
    dropped message takes no token). A later slot is reserved: send the message then without
    taking again."""
    now = as_utc(now)
    current = bucket or full(limit, now)
    elapsed = max(now - current.updated_at, timedelta(0))
    tokens = min(float(limit.burst), current.tokens + elapsed / limit.interval)
    refilled = Bucket(tokens, max(now, current.updated_at))
    if tokens >= 1 or priority == "P1":
        return Bucket(tokens - 1, refilled.updated_at), now
    wait = limit.interval * (1 - tokens)  # until this message's token has refilled
    if wait > limit.max_delay:
        return refilled, None
    return Bucket(tokens - 1, refilled.updated_at), now + wait
