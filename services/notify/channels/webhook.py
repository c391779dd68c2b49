"""Generic JSON webhook, signed so that receivers can verify it and reject replays.

Scheme `v1`: with `t` the Unix time in seconds when the attempt is sent and `body` the exact
request body bytes,

    X-ITSM-Timestamp: t
    X-ITSM-Signature: v1=hex(HMAC-SHA256(secret, f"{t}.".encode() + body))

Several `v1=` entries may appear, comma-separated: while a secret is rotated the body is signed
with the new secret and the previous one, so a receiver holding either verifies; one matching
entry is enough. `X-ITSM-Delivery` carries the notification's dedup
key, the same on every retry, so a receiver can also drop duplicates inside the tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.notify.channels.base import DeliveryResult, Message
from services.notify.channels.posting import JsonPostChannel

SIGNATURE_HEADER = "X-ITSM-Signature"
TIMESTAMP_HEADER = "X-ITSM-Timestamp"
DELIVERY_HEADER = "X-ITSM-Delivery"
SCHEME = "v1"
DEFAULT_TOLERANCE = timedelta(minutes=5)
PAYLOAD_FORMAT = "itsm.notification.v1"


class SignatureRejected(ValueError):
    """The request is not a fresh, authentic notification; the message says why."""


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str = field(repr=False)  # may embed a token: treat as a secret, log only its host
    secret: str = field(repr=False)
    previous_secret: str | None = field(default=None, repr=False)  # signs too while rotating

    def __post_init__(self) -> None:
        for secret in (self.secret, self.previous_secret):
            if secret is not None and len(secret.encode()) < 16:
                raise ValueError("a webhook secret must be at least 16 bytes")

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.secret, self.previous_secret) if s]


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SCHEME}={digest}"


def signature_headers(
    secret: str | bytes | Sequence[str | bytes], body: bytes, now: datetime
) -> dict[str, str]:
    """One `v1=` signature per secret (the current one first)."""
    timestamp = int(now.timestamp())
    keys = [secret] if isinstance(secret, str | bytes) else list(secret)
    signature = ",".join(sign(key, timestamp, body) for key in keys)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature}


def verify_signature(
    secret: str | bytes | Sequence[str | bytes],
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> None:
    """Check a received webhook; raise SignatureRejected unless it is authentic and fresh.

    `secret` may be several (accept the old and the new one while rotating); `body` must be
    the raw bytes as received, before any JSON parsing. Timestamps further than `tolerance`
    from `now`, in the past (a replay) or the future (a skewed clock), are refused.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    raw_timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    if raw_timestamp is None:
        raise SignatureRejected(f"missing {TIMESTAMP_HEADER} header")
    if not raw_timestamp.strip().isdigit():
        raise SignatureRejected(f"{TIMESTAMP_HEADER} is not a Unix time in seconds")
    timestamp = int(raw_timestamp)
    skew = now.timestamp() - timestamp
    if abs(skew) > tolerance.total_seconds():
        direction = "old" if skew > 0 else "in the future"
        raise SignatureRejected(
            f"timestamp is {abs(int(skew))} s {direction}, outside the tolerance of "
            f"{int(tolerance.total_seconds())} s (a replay, or a clock out of sync)"
        )
    raw_signature = lowered.get(SIGNATURE_HEADER.lower())
    if raw_signature is None:
        raise SignatureRejected(f"missing {SIGNATURE_HEADER} header")
    offered = [
        value.strip()
        for scheme, _, value in (part.strip().partition("=") for part in raw_signature.split(","))
        if scheme == SCHEME
    ]
    if not offered:
        raise SignatureRejected(f"{SIGNATURE_HEADER} has no {SCHEME}= signature")
    secrets = [secret] if isinstance(secret, str | bytes) else list(secret)
    for candidate in secrets:
        expected = sign(candidate, timestamp, body).partition("=")[2]
        # compare every offered value in constant time, never short-circuiting on content
        if any(hmac.compare_digest(expected, value) for value in offered):
            return
    raise SignatureRejected("signature does not match the body")


def webhook_payload(message: Message) -> dict[str, Any]:
    """The JSON document a webhook receives (documented in docs/notify.md)."""
    return {
        "format": PAYLOAD_FORMAT,
        "id": message.dedup_key,
        "kind": message.kind,
        "subject": message.subject,
        "headline": message.headline,
        "text": message.text,
        "ticket": {
            "id": message.ticket_id,
            "number": message.ticket_number,
            "title": message.title,
            "priority": message.priority,
            "url": message.ticket_url,
        },
        "facts": [{"label": fact.label, "value": fact.value} for fact in message.facts],
        "ack_url": message.ack_url,
    }


def encode_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


class WebhookChannel(JsonPostChannel):
    name = "webhook"

    async def send(self, message: Message, target: WebhookTarget) -> DeliveryResult:
        body = encode_json(webhook_payload(message))
        # signed per attempt: a retry after minutes still arrives with a fresh timestamp
        headers = signature_headers(target.secrets, body, self._now())
        headers[DELIVERY_HEADER] = message.dedup_key
        return await self.post(target.url, body, headers)
