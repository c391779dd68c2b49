"""Delivery rules: the dedup key, and retries with exponential backoff and jitter.

A delivery moves by a table: pending -> sent on success; on a transient failure (a timeout, a
connection error, 5xx, 429) -> retrying until `max_attempts` attempts were made, then failed; on
a permanent failure (any other 4xx: the receiver will never accept it) -> failed at once. A
failed delivery goes to the dead-letter topic with its attempts logged.

The wait before attempt n+1 is drawn uniformly from [base * 2^(n-1) * (1 - jitter), base *
2^(n-1)], capped at `cap`, so receivers recovering from an outage are not hit by every sender in
the same instant. A receiver's Retry-After is honoured when it asks for longer. The random
source is a parameter: tests pass a fixed one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from services.notify.domain.clock import as_utc
from services.notify.domain.model import Channel
from shared.errors import Invalid

DeliveryStatus = Literal["pending", "retrying", "sent", "failed"]
AttemptOutcome = Literal["success", "transient", "permanent"]
Random = Callable[[], float]  # uniform in [0, 1), like random.random

TRANSITIONS: dict[tuple[DeliveryStatus, AttemptOutcome], DeliveryStatus] = {
    ("pending", "success"): "sent",
    ("pending", "transient"): "retrying",
    ("pending", "permanent"): "failed",
    ("retrying", "success"): "sent",
    ("retrying", "transient"): "retrying",
    ("retrying", "permanent"): "failed",
}
FINAL: frozenset[DeliveryStatus] = frozenset({"sent", "failed"})


def dedup_key(event_id: str, recipient: str, channel: Channel, step: int = 0) -> str:
    """event id x recipient x channel (x escalation step, so a repeat round or the next level
    may reach the same person again): a redelivered event maps to the same key, which the
    delivery log refuses to send twice. A digest, since ids from outside may hold any text."""
    material = json.dumps([event_id, step, recipient, channel], separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()


def classify(status_code: int | None, *, timed_out: bool = False) -> AttemptOutcome:
    """An HTTP status (None: no response at all, e.g. connection refused) as an outcome. SMTP
    senders map 4xx replies to transient and 5xx replies to permanent before calling this."""
    if timed_out or status_code is None:
        return "transient"
    if 200 <= status_code < 300:
        return "success"
    if status_code >= 500 or status_code in (408, 425, 429):
        return "transient"
    return "permanent"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base: timedelta = timedelta(seconds=2)
    cap: timedelta = timedelta(minutes=5)
    jitter: float = 0.5  # the share of each wait that is random

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise Invalid("max_attempts must be at least 1")
        if not timedelta(0) < self.base <= self.cap:
            raise Invalid("the backoff base must be positive and at most the cap")
        if not 0 <= self.jitter <= 1:
            raise Invalid("jitter is a share between 0 and 1")

    def backoff(self, attempts: int, random: Random) -> timedelta:
        """The wait after the `attempts`-th failed attempt (1-based)."""
        ceiling: timedelta = min(self.cap, self.base * 2 ** (attempts - 1))
        return ceiling * (1 - self.jitter * random())


@dataclass(frozen=True)
class Attempt:
    at: datetime
    outcome: AttemptOutcome
    detail: str = ""  # "HTTP 503", "timeout", "550 mailbox unavailable"


@dataclass(frozen=True)
class Delivery:
    key: str
    endpoint: str  # the circuit breaker's key: a webhook URL's origin, an SMTP relay
    status: DeliveryStatus = "pending"
    attempts: tuple[Attempt, ...] = ()
    next_attempt_at: datetime | None = None  # pending or retrying: when to try (again)

    @property
    def final(self) -> bool:
        return self.status in FINAL


def record_attempt(
    delivery: Delivery,
    attempt: Attempt,
    *,
    policy: RetryPolicy,
    random: Random,
    retry_after: timedelta | None = None,
) -> Delivery:
    """The delivery after `attempt`; a final one is left as it is (a late duplicate result)."""
    if delivery.final:
        return delivery
    status = TRANSITIONS[(delivery.status, attempt.outcome)]
    attempts = (*delivery.attempts, replace(attempt, at=as_utc(attempt.at)))
    if status == "retrying" and len(attempts) >= policy.max_attempts:
        status = "failed"
    next_at = None
    if status == "retrying":
        wait = policy.backoff(len(attempts), random)
        if retry_after is not None:
            wait = max(wait, min(retry_after, policy.cap))
        next_at = as_utc(attempt.at) + wait
    return replace(delivery, status=status, attempts=attempts, next_attempt_at=next_at)
