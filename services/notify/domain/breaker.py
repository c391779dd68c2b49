"""A circuit breaker per endpoint (a webhook's origin, an SMTP relay), as a transition table.

closed: deliveries go; `failure_threshold` consecutive failures trip it -> open. open: nothing
goes to the endpoint until `cooldown` has passed -> half_open. half_open: one delivery goes as a
probe; its success closes the breaker, its failure opens it again for another cooldown (a probe
that never reports back, say its worker died, is replaced after a cooldown). Deliveries held by
an open breaker wait without using up their attempts.

Only failures that are the endpoint's (timeouts, refused connections, 5xx) should be recorded
as failures; a 4xx is the message's fault and says the endpoint is up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from services.notify.domain.clock import as_utc
from shared.errors import Invalid

BreakerState = Literal["closed", "open", "half_open"]
BreakerEvent = Literal["success", "failure", "trip", "cooldown_elapsed"]

TRANSITIONS: dict[tuple[BreakerState, BreakerEvent], BreakerState] = {
    ("closed", "success"): "closed",
    ("closed", "failure"): "closed",
    ("closed", "trip"): "open",
    ("open", "cooldown_elapsed"): "half_open",
    ("half_open", "success"): "closed",
    ("half_open", "failure"): "open",
}


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5
    cooldown: timedelta = timedelta(seconds=30)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.cooldown <= timedelta(0):
            raise Invalid("a circuit breaker needs a positive threshold and cooldown")


@dataclass(frozen=True)
class CircuitBreaker:
    endpoint: str
    state: BreakerState = "closed"
    failures: int = 0  # consecutive, while closed
    since: datetime | None = None  # when it opened, or when the half-open probe went out


def step(breaker: CircuitBreaker, event: BreakerEvent, now: datetime) -> CircuitBreaker:
    """Raises KeyError for an event the table does not allow in the state (a caller bug)."""
    state = TRANSITIONS[(breaker.state, event)]
    failures = breaker.failures + 1 if (breaker.state, event) == ("closed", "failure") else 0
    since = as_utc(now) if state != breaker.state or state != "closed" else breaker.since
    return replace(breaker, state=state, failures=failures, since=since)


def allow(
    breaker: CircuitBreaker, now: datetime, settings: BreakerSettings
) -> tuple[CircuitBreaker, datetime | None]:
    """Whether a delivery may go to the endpoint at `now`: the breaker after asking, and None
    when it may go, else when to ask again."""
    now = as_utc(now)
    if breaker.state == "closed":
        return breaker, None
    assert breaker.since is not None
    reopens = breaker.since + settings.cooldown
    if now < reopens:
        return breaker, reopens
    if breaker.state == "open":
        return step(breaker, "cooldown_elapsed", now), None  # this delivery is the probe
    return replace(breaker, since=now), None  # the previous probe never reported: another


def record(
    breaker: CircuitBreaker, succeeded: bool, now: datetime, settings: BreakerSettings
) -> CircuitBreaker:
    """The breaker after a delivery's outcome. A late result from before the breaker opened
    changes nothing."""
    if breaker.state == "open":
        return breaker
    updated = step(breaker, "success" if succeeded else "failure", now)
    if updated.state == "closed" and updated.failures >= settings.failure_threshold:
        return step(updated, "trip", now)
    return updated
