"""What every channel shares: the rendered message, the outcome of one delivery attempt and
the rules that sort failures into "retry later" (transient) and "give up" (permanent)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Protocol, TypeVar
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Fact:
    """One labelled value shown in chat cards (Slack fields, a Teams FactSet)."""

    label: str
    value: str


@dataclass(frozen=True, slots=True)
class Message:
    """A notification rendered for one recipient, ready for any channel.

    `dedup_key` (event id x recipient x channel) is carried to the receiver - the e-mail's
    Message-ID, the webhook's delivery id - so that a resend is recognisable there too.
    """

    dedup_key: str
    kind: str  # the template family, e.g. "sla_breached"
    subject: str  # one line
    headline: str  # one line for chat: what happened and how urgent
    text: str
    html: str
    ticket_id: str
    ticket_number: str
    title: str
    priority: str
    ticket_url: str
    facts: tuple[Fact, ...] = ()
    ack_url: str | None = None


class Outcome(StrEnum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"  # worth retrying: timeouts, connection errors, 5xx, 429
    PERMANENT = "permanent"  # retrying cannot help: other 4xx, a rejected recipient


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of one attempt. `endpoint` is only ever a host name (webhook URLs carry
    secrets), and `detail` never contains a URL or credential, so both can be logged and
    stored in the delivery log as they are."""

    outcome: Outcome
    channel: str
    endpoint: str
    detail: str = ""
    status: int | None = None  # HTTP status or SMTP reply code
    retry_after: float | None = None  # seconds the receiver asked us to wait

    @property
    def delivered(self) -> bool:
        return self.outcome is Outcome.DELIVERED

    @property
    def retryable(self) -> bool:
        return self.outcome is Outcome.TRANSIENT


@dataclass(frozen=True, slots=True)
class ChannelTimeouts:
    """Every outbound call is bounded: `connect` for establishing the connection (TCP, TLS,
    SMTP greeting), `total` for the whole attempt including the answer."""

    connect: float = 5.0
    total: float = 15.0

    def __post_init__(self) -> None:
        if not 0 < self.connect <= self.total:
            raise ValueError("timeouts must satisfy 0 < connect <= total")


TargetT_contra = TypeVar("TargetT_contra", contravariant=True)


class Channel(Protocol[TargetT_contra]):
    """Delivers a rendered message to one target. Never raises for a delivery failure: the
    failure is the result, classified, so the caller decides between retry and dead letter."""

    name: str

    async def send(self, message: Message, target: TargetT_contra) -> DeliveryResult: ...


def endpoint_host(url: str) -> str:
    """The part of a URL that may be logged: the host (and port). Paths and queries of Slack,
    Teams and webhook URLs are credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def classify_http_status(status: int) -> Outcome:
    """2xx delivered; 408, 425, 429 and 5xx are worth retrying; anything else (other 4xx, and
    3xx since redirects are not followed) will fail the same way again."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (408, 425, 429) or status >= 500:
        return Outcome.TRANSIENT
    return Outcome.PERMANENT


def classify_smtp_code(code: int) -> Outcome:
    """RFC 5321: 4yz is a transient negative reply, 5yz a permanent one."""
    if 200 <= code < 400:
        return Outcome.DELIVERED
    return Outcome.TRANSIENT if 400 <= code < 500 else Outcome.PERMANENT
