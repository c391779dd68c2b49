"""Per-client rate limiting: token buckets keyed by the caller, answered with 429 + Retry-After.

A client is the authenticated principal (the token's subject) when the request carries a valid
bearer token, else its source address (`shared.http.client`). API calls and alert intake draw on
separate buckets, intake with a stricter rate. The state lives in the process: with N replicas
behind a load balancer a client may get up to N times the configured rate.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.auth.principal import PRINCIPAL_SCOPE_KEY, Principal
from shared.auth.tokens import InvalidToken, TokenVerifier
from shared.http.client import client_address, header
from shared.http.problems import Problem, problem_response

Clock = Callable[[], float]
# Probes and the scrape are never limited: a throttled kubelet would restart a healthy pod.
EXEMPT_PATHS = frozenset({"/livez", "/readyz", "/metrics"})


@dataclass(frozen=True)
class Rate:
    """`per_second` tokens refill continuously up to `burst`; 0 per second turns the limit off."""

    per_second: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.per_second > 0


class TokenBucket:
    """One client's bucket. Pure: the caller passes the time (monotonic seconds)."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self.tokens = float(rate.burst)
        self.stamp = now

    def take(self, rate: Rate, now: float) -> float:
        """Take one token: 0.0 when admitted, else the seconds until one is available."""
        elapsed = max(0.0, now - self.stamp)  # a clock that steps back refills nothing
        self.tokens = min(float(rate.burst), self.tokens + elapsed * rate.per_second)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate.per_second


class RateLimiter:
    """Buckets per client for one rate, at most `max_clients` of them: the least recently seen
    client is forgotten first (it starts again with a full bucket), so a spray of source
    addresses cannot grow memory without bound."""

    def __init__(self, rate: Rate, *, max_clients: int = 10_000, clock: Clock = time.monotonic):
        self.rate = rate
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, client: str) -> float:
        """0.0 when `client` may proceed, else the seconds it should wait."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.rate, now)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        return bucket.take(self.rate, now)


Network = IPv4Network | IPv6Network


@dataclass(frozen=True)
class RateLimitPolicy:
    api: Rate = Rate(50, 200)
    intake: Rate = Rate(5, 20)
    intake_paths: tuple[str, ...] = ()  # path prefixes drawing on the intake buckets
    max_clients: int = 10_000
    trusted_proxies: Sequence[Network] = field(default_factory=tuple)

    def bucket_of(self, path: str) -> str | None:
        """`api`, `intake`, or None for an exempt path."""
        if path in EXEMPT_PATHS:
            return None
        return "intake" if path.startswith(self.intake_paths) else "api"


class RateLimits:
    """Pure ASGI middleware applying a RateLimitPolicy before routing."""

    def __init__(
        self, app: ASGIApp, *, policy: RateLimitPolicy, clock: Clock = time.monotonic
    ) -> None:
        self.app = app
        self.policy = policy
        self.limiters = {
            name: RateLimiter(rate, max_clients=policy.max_clients, clock=clock)
            for name, rate in (("api", policy.api), ("intake", policy.intake))
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        bucket = self.policy.bucket_of(scope["path"]) if scope["type"] == "http" else None
        limiter = self.limiters[bucket] if bucket else None
        if limiter is None or not limiter.rate.enabled:
            await self.app(scope, receive, send)
            return
        wait = limiter.check(await self._client(scope))
        if wait == 0.0:
            await self.app(scope, receive, send)
            return
        await self._refuse(scope, receive, send, limiter.rate, wait)

    async def _client(self, scope: Scope) -> str:
        principal = await authenticated(scope)
        if principal is not None:
            return f"sub:{principal.subject}"
        return f"addr:{client_address(scope, self.policy.trusted_proxies)}"

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, rate: Rate, wait: float) -> None:
        retry_after = max(1, math.ceil(wait))
        problem = Problem(
            429,
            "Too many requests",
            f"This client exceeded {rate.per_second:g} requests per second (bursts of "
            f"{rate.burst}); retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )
        await problem_response(Request(scope, receive), problem)(scope, receive, send)


async def authenticated(scope: Scope) -> Principal | None:
    """The principal of a valid bearer token, kept in the scope so that `current_user` need not
    verify it again; None without a token, with an invalid one, or before the app is wired."""
    scheme, _, token = header(scope, b"authorization").partition(" ")
    app = scope.get("app")
    verifier: TokenVerifier | None = getattr(getattr(app, "state", None), "token_verifier", None)
    if scheme.lower() != "bearer" or not token or verifier is None:
        return None
    try:
        if verifier.fetches_keys:  # the JWKS client fetches synchronously
            principal = await run_in_threadpool(verifier.verify, token.strip())
        else:
            principal = verifier.verify(token.strip())
    except InvalidToken:
        return None
    scope[PRINCIPAL_SCOPE_KEY] = principal
    return principal
