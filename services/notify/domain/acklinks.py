"""Signed single-use acknowledgement links: `…/ack/<token>` in a message acknowledges the
escalation for its recipient with one click, without a login.

A token is `v1.<payload>.<signature>`: the payload (base64url JSON) names the token id, the
escalation, the recipient and the expiry; the signature is HMAC-SHA256 over `v1.<payload>` with
the service's link key. Verification checks the signature (in constant time) before it reads
anything, then the expiry. Several keys may verify (the first signs), so the key can be rotated
without breaking links already sent. Single use needs memory: `verify` returns the token id,
and the service records it (until the expiry) and refuses it the second time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from services.notify.domain.clock import as_utc
from shared.errors import Invalid

VERSION = "v1"
MIN_KEY_BYTES = 32
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")
Refusal = Literal["malformed", "bad_signature", "expired"]


class InvalidAckLink(Invalid):
    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AckClaim:
    token_id: str  # unique per link: the store refuses a second use
    escalation_id: str
    recipient: str
    expires_at: datetime  # whole seconds


def create_token(claim: AckClaim, key: bytes) -> str:
    _check_key(key)
    payload = {
        "t": claim.token_id,
        "e": claim.escalation_id,
        "u": claim.recipient,
        "x": int(as_utc(claim.expires_at).timestamp()),
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{VERSION}.{body}.{_b64(_sign(key, body))}"


def verify_token(token: str, keys: Sequence[bytes], now: datetime) -> AckClaim:
    """The claim of a genuine, unexpired token; InvalidAckLink (with its `reason`) otherwise."""
    if not keys:
        raise ValueError("no acknowledgement link key configured")
    for key in keys:
        _check_key(key)
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise InvalidAckLink("malformed", "not an acknowledgement link token")
    _, body, signature = parts
    try:
        given = _unb64(signature)
    except ValueError:
        raise InvalidAckLink("malformed", "the link's signature is not base64url") from None
    if not any(hmac.compare_digest(given, _sign(key, body)) for key in keys):
        raise InvalidAckLink("bad_signature", "the acknowledgement link's signature is invalid")
    claim = _decode(body)
    if as_utc(now) >= claim.expires_at:
        raise InvalidAckLink("expired", f"the acknowledgement link expired at {claim.expires_at}")
    return claim


def _decode(body: str) -> AckClaim:
    try:
        data = json.loads(_unb64(body))
        fields = (data["t"], data["e"], data["u"])
        expiry = data["x"]
        if not all(isinstance(f, str) and f for f in fields) or type(expiry) is not int:
            raise TypeError
        return AckClaim(*fields, expires_at=datetime.fromtimestamp(expiry, UTC))
    except (ValueError, KeyError, TypeError, OverflowError, OSError):
        # Signed by us yet unreadable: a key shared with something else. Refuse all the same.
        raise InvalidAckLink("malformed", "the acknowledgement link's content is invalid") from None


def _sign(key: bytes, body: str) -> bytes:
    return hmac.new(key, f"{VERSION}.{body}".encode(), hashlib.sha256).digest()


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"an acknowledgement link key needs at least {MIN_KEY_BYTES} bytes")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _BASE64URL.match(text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as error:
        raise ValueError(str(error)) from None
