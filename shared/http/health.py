"""/livez (process), /readyz (dependencies reachable, else 503) and /metrics (Prometheus).

Probes are left unauthenticated for the kubelet; NetworkPolicy keeps them cluster-internal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from shared.http.problems import PROBLEM_JSON

ReadinessCheck = Callable[[], Awaitable[bool]]

router = APIRouter(tags=["health"])


@router.get("/livez", summary="Process liveness")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Dependencies reachable")
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, ReadinessCheck] = request.app.state.readiness_checks
    results = await asyncio.gather(*(_run(check) for check in checks.values()))
    status = dict(zip(checks, results, strict=True))
    if all(results):
        return JSONResponse({"status": "ready", "checks": _words(status)})
    failing = ", ".join(name for name, ok in status.items() if not ok)
    return JSONResponse(
        {
            "type": "https://itsm.example/problems/not-ready",
            "title": "Not ready",
            "status": 503,
            "detail": f"Unreachable: {failing}.",
            "checks": _words(status),
        },
        status_code=503,
        media_type=PROBLEM_JSON,
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def _run(check: ReadinessCheck) -> bool:
    try:
        return await asyncio.wait_for(check(), timeout=5.0)
    except Exception:
        return False


def _words(status: dict[str, bool]) -> dict[str, str]:
    return {name: "ok" if ok else "unreachable" for name, ok in status.items()}
