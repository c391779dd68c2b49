"""The webhook signature scheme: what a receiver's verify_signature accepts and refuses."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from services.notify.channels.webhook import (
    SignatureRejected,
    WebhookTarget,
    sign,
    signature_headers,
    verify_signature,
)

SECRET = "whsec-0123456789abcdef"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BODY = b'{"id":"evt-1:ops:webhook","ticket":{"number":"INC0001042"}}'


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    headers = signature_headers(SECRET, BODY, NOW)

    timestamp = int(NOW.timestamp())
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + BODY, hashlib.sha256)
    assert headers == {
        "X-ITSM-Timestamp": str(timestamp),
        "X-ITSM-Signature": f"v1={expected.hexdigest()}",
    }


def test_an_authentic_fresh_request_verifies_whatever_the_header_case() -> None:
    headers = signature_headers(SECRET, BODY, NOW)
    verify_signature(SECRET, headers, BODY, NOW + timedelta(seconds=299))
    lowered = {name.lower(): value for name, value in headers.items()}
    verify_signature(SECRET, lowered, BODY, NOW)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda h, b: (h, b.replace(b"INC0001042", b"INC0009999")), "does not match the body"),
        (
            lambda h, b: ({**h, "X-ITSM-Timestamp": str(int(NOW.timestamp()) + 1)}, b),
            "does not match",
        ),
        (lambda h, b: ({**h, "X-ITSM-Signature": "v1=" + "0" * 64}, b), "does not match"),
        (lambda h, b: ({**h, "X-ITSM-Signature": "v0=abc"}, b), "has no v1= signature"),
        (
            lambda h, b: ({k: v for k, v in h.items() if k != "X-ITSM-Signature"}, b),
            "missing X-ITSM-Signature",
        ),
        (
            lambda h, b: ({k: v for k, v in h.items() if k != "X-ITSM-Timestamp"}, b),
            "missing X-ITSM-Timestamp",
        ),
        (lambda h, b: ({**h, "X-ITSM-Timestamp": "yesterday"}, b), "not a Unix time"),
    ],
    ids=[
        "body",
        "timestamp",
        "signature",
        "scheme",
        "no-signature",
        "no-timestamp",
        "bad-timestamp",
    ],
)
def test_tampered_or_incomplete_requests_are_refused(tamper, reason: str) -> None:  # type: ignore[no-untyped-def]
    headers, body = tamper(signature_headers(SECRET, BODY, NOW), BODY)
    with pytest.raises(SignatureRejected, match=reason):
        verify_signature(SECRET, headers, body, NOW)


def test_the_wrong_secret_is_refused() -> None:
    headers = signature_headers(SECRET, BODY, NOW)
    with pytest.raises(SignatureRejected, match="does not match"):
        verify_signature("another-secret-of-16+", headers, BODY, NOW)


def test_a_replay_after_the_tolerance_and_a_future_timestamp_are_refused() -> None:
    headers = signature_headers(SECRET, BODY, NOW)

    with pytest.raises(SignatureRejected, match="301 s old, outside the tolerance of 300 s"):
        verify_signature(SECRET, headers, BODY, NOW + timedelta(seconds=301))
    with pytest.raises(SignatureRejected, match="in the future"):
        verify_signature(SECRET, headers, BODY, NOW - timedelta(minutes=10))
    with pytest.raises(SignatureRejected, match="old"):
        verify_signature(SECRET, headers, BODY, NOW + timedelta(seconds=31), timedelta(seconds=30))


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = "old-secret-0123456789", "new-secret-0123456789"
    headers = signature_headers(new, BODY, NOW)
    verify_signature([old, new], headers, BODY, NOW)

    # a sender signing with both: one matching entry is enough
    timestamp = int(NOW.timestamp())
    both = {
        "X-ITSM-Timestamp": str(timestamp),
        "X-ITSM-Signature": f"{sign(old, timestamp, BODY)}, {sign(new, timestamp, BODY)}",
    }
    verify_signature(new, both, BODY, NOW)
    verify_signature(old.encode(), both, BODY, NOW)


def test_a_target_refuses_a_short_secret_and_never_shows_it() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        WebhookTarget("https://hooks.example.com/itsm", "short")
    target = WebhookTarget("https://hooks.example.com/itsm?token=abc", SECRET)
    assert SECRET not in repr(target) and "token=abc" not in repr(target)
