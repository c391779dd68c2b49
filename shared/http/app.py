"""The common FastAPI application shape of every service."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from shared.http import health
from shared.http.problems import Problem, install_problem_handlers, problem_response

REQUESTS = Counter(
    "itsm_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
LATENCY = Histogram(
    "itsm_http_request_duration_seconds", "HTTP request latency", ["service", "method", "route"]
)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


class RequestLimits(BaseHTTPMiddleware):
    """Reject oversized bodies early (413) and record request metrics per route template."""

    def __init__(self, app: Any, *, service: str, max_body_bytes: int) -> None:
        super().__init__(app)
        self.service = service
        self.max_body_bytes = max_body_bytes

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            return problem_response(
                request,
                Problem(
                    413,
                    "Payload too large",
                    f"The body exceeds {self.max_body_bytes} bytes.",
                ),
            )
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        LATENCY.labels(self.service, request.method, route).observe(time.perf_counter() - started)
        REQUESTS.labels(self.service, request.method, route, str(response.status_code)).inc()
        return response


def create_service_app(
    *,
    title: str,
    service: str,
    lifespan: Lifespan | None = None,
    max_body_bytes: int = 1_048_576,
    description: str = "",
) -> FastAPI:
    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    app.state.readiness_checks = {}
    install_problem_handlers(app)
    app.add_middleware(RequestLimits, service=service, max_body_bytes=max_body_bytes)
    app.include_router(health.router)
    return app
