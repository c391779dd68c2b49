"""The common FastAPI application shape of every service."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI, Request
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http import health
from shared.http.audit import PrivilegedAudit
from shared.http.client import header
from shared.http.openapi import document_problems
from shared.http.problems import Problem, install_problem_handlers, problem_response
from shared.http.ratelimit import RateLimitPolicy, RateLimits

REQUESTS = Counter(
    "itsm_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
# `route` is the route template (`/api/v1/incidents/{incident_id}`), never the raw path: one
# series per endpoint, not per ticket. Requests no route matched are `unmatched`.
LATENCY = Histogram(
    "itsm_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route", "status"],
)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


class RequestLimits:
    """Reject oversized bodies (413) and record request metrics per route template.

    A pure ASGI middleware: Starlette's BaseHTTPMiddleware runs every request through an extra
    task and memory streams, a measurable share of a small request's cost."""

    def __init__(self, app: ASGIApp, *, service: str, max_body_bytes: int) -> None:
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        status = 500  # if the app fails before it answers
        received = 0

        async def limited_receive() -> Message:
            # A body sent without (or beyond) its declared length is counted as it arrives.
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise HTTPException(413, self._too_large_detail)
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, limited_receive, observed_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            elapsed = time.perf_counter() - started
            LATENCY.labels(self.service, method, route, str(status)).observe(elapsed)
            REQUESTS.labels(self.service, method, route, str(status)).inc()

    @property
    def _too_large_detail(self) -> str:
        return f"The body exceeds {self.max_body_bytes} bytes."

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = problem_response(
            request, Problem(413, "Payload too large", self._too_large_detail)
        )
        await response(scope, receive, send)
        REQUESTS.labels(self.service, scope["method"], "unmatched", "413").inc()


def create_service_app(
    *,
    title: str,
    service: str,
    lifespan: Lifespan | None = None,
    max_body_bytes: int = 1_048_576,
    rate_limits: RateLimitPolicy | None = None,
    description: str = "",
) -> FastAPI:
    """`rate_limits` None: the default policy (no alert intake paths)."""
    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    app.state.readiness_checks = {}
    install_problem_handlers(app)
    document_problems(app)
    policy = rate_limits or RateLimitPolicy()
    # Innermost first: the audit sees the principal the rate limiter or the route verified;
    # the rate limiter runs inside RequestLimits, so refusals (429) are counted in the metrics.
    app.add_middleware(PrivilegedAudit, service=service, trusted_proxies=policy.trusted_proxies)
    app.add_middleware(RateLimits, policy=policy)
    app.add_middleware(RequestLimits, service=service, max_body_bytes=max_body_bytes)
    app.include_router(health.router)
    # A server span per request (its tracer resolves the provider an entry point installs).
    # Probes and scrapes are not traced; nor are the ASGI receive/send steps (noise).
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="livez,readyz,metrics", exclude_spans=["receive", "send"]
    )
    return app
