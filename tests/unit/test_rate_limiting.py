"""The per-client rate limit's parts, on an injected clock (no sleeps): the token bucket, the
limiter's bookkeeping, which bucket a path draws on, and the client's source address behind
(trusted and untrusted) proxies."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest

from shared.http.client import client_address
from shared.http.ratelimit import Rate, RateLimiter, RateLimitPolicy, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# (case, rate, [(seconds since start, expected wait)]); a wait of 0 means admitted.
BUCKET_CASES: list[tuple[str, Rate, list[tuple[float, float]]]] = [
    ("burst is admitted at once", Rate(1, 3), [(0, 0), (0, 0), (0, 0), (0, 1.0)]),
    ("refills at the rate", Rate(2, 1), [(0, 0), (0, 0.5), (0.25, 0.25), (0.5, 0), (0.5, 0.5)]),
    ("never holds more than the burst", Rate(10, 2), [(100, 0), (100, 0), (100, 0.1)]),
    ("slow rate, long wait", Rate(0.01, 1), [(0, 0), (0, 100.0), (50, 50.0)]),
    ("partial token counts", Rate(1, 1), [(0, 0), (0.4, 0.6), (0.9, 0.1), (1.0, 0)]),
    ("clock stepping back refills nothing", Rate(1, 1), [(5, 0), (4, 1.0), (5, 0)]),
]


@pytest.mark.parametrize(
    ("rate", "steps"), [c[1:] for c in BUCKET_CASES], ids=[c[0] for c in BUCKET_CASES]
)
def test_token_bucket(rate: Rate, steps: list[tuple[float, float]]) -> None:
    bucket = TokenBucket(rate, now=0.0)
    for at, expected in steps:
        assert bucket.take(rate, at) == pytest.approx(expected), f"at {at} s"


def test_the_limiter_keeps_one_bucket_per_client() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Rate(1, 2), clock=clock)
    assert [limiter.check("a") for _ in range(3)] == [0, 0, 1.0]
    assert limiter.check("b") == 0  # another client is not affected
    clock.now += 1
    assert limiter.check("a") == 0


def test_the_limiter_forgets_the_least_recently_seen_client_beyond_its_bound() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Rate(1, 1), max_clients=2, clock=clock)
    limiter.check("a")
    limiter.check("b")
    assert limiter.check("a") > 0  # a is now the most recent
    limiter.check("c")  # evicts b, not a
    assert len(limiter) == 2
    assert limiter.check("a") > 0
    assert limiter.check("b") == 0  # b starts again with a full bucket


@pytest.mark.parametrize(
    ("path", "bucket"),
    [
        ("/livez", None),
        ("/readyz", None),
        ("/metrics", None),
        ("/api/v1/incidents", "api"),
        ("/livez/x", "api"),
        ("/api/v1/alerts/alertmanager", "intake"),
        ("/api/v1/alertsX", "api"),
    ],
)
def test_which_bucket_a_path_draws_on(path: str, bucket: str | None) -> None:
    policy = RateLimitPolicy(intake_paths=("/api/v1/alerts/",))
    assert policy.bucket_of(path) == bucket


def test_rate_zero_turns_a_limit_off() -> None:
    assert not Rate(0, 10).enabled and Rate(0.5, 1).enabled


PROXIES = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]


def scope(peer: str | None, *forwarded: str) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return {"client": (peer, 5000) if peer else None, "headers": headers}


# (case, scope, trusted proxies, expected address)
ADDRESS_CASES: list[tuple[str, dict[str, Any], list[Any], str]] = [
    ("the peer, without proxies", scope("192.0.2.7"), PROXIES, "192.0.2.7"),
    (
        "a header from an untrusted peer is ignored",
        scope("192.0.2.7", "1.2.3.4"),
        PROXIES,
        "192.0.2.7",
    ),
    (
        "the header is ignored when no proxy is trusted",
        scope("10.0.0.1", "1.2.3.4"),
        [],
        "10.0.0.1",
    ),
    ("behind one trusted proxy", scope("10.0.0.1", "198.51.100.9"), PROXIES, "198.51.100.9"),
    (
        "the nearest untrusted hop wins",
        scope("10.0.0.1", "6.6.6.6, 198.51.100.9, 10.1.1.1"),
        PROXIES,
        "198.51.100.9",
    ),
    ("several header lines", scope("10.0.0.1", "6.6.6.6", "198.51.100.9"), PROXIES, "198.51.100.9"),
    (
        "all hops trusted: the farthest",
        scope("10.0.0.1", "10.2.2.2, 10.3.3.3"),
        PROXIES,
        "10.2.2.2",
    ),
    ("garbage stops at the proxy", scope("10.0.0.1", "6.6.6.6, not-an-ip"), PROXIES, "10.0.0.1"),
    ("trusted peer, no header", scope("10.0.0.1"), PROXIES, "10.0.0.1"),
    ("IPv6 behind a proxy", scope("fd00::1", "2001:db8::5"), PROXIES, "2001:db8::5"),
    ("no peer at all", scope(None), PROXIES, "unknown"),
]


@pytest.mark.parametrize(
    ("request_scope", "proxies", "expected"),
    [c[1:] for c in ADDRESS_CASES],
    ids=[c[0] for c in ADDRESS_CASES],
)
def test_client_address(request_scope: dict[str, Any], proxies: list[Any], expected: str) -> None:
    assert client_address(request_scope, proxies) == expected
