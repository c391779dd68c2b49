"""The per-request plumbing every service shares: the body limit and request metrics (a pure
ASGI middleware), and a tracer provider that records spans only when they are exported."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Body
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from shared.http.app import create_service_app
from shared.telemetry import current_traceparent, tracer_provider
from tests.support.apps import http_server

LIMIT = 2048


def limited_app() -> object:
    app = create_service_app(title="t", service="limits-test", max_body_bytes=LIMIT)

    @app.post("/echo/{name}")
    async def echo(name: str, body: Annotated[dict, Body()]) -> dict:
        return {"name": name, "size": len(body.get("text", ""))}

    return app


def requests_seen(route: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "itsm_http_requests_total",
        {"service": "limits-test", "method": "POST", "route": route, "status": status},
    )
    return value or 0.0


async def test_a_body_within_the_limit_passes_and_is_counted_by_route_template() -> None:
    before = requests_seen("/echo/{name}", "200")
    async with http_server(limited_app()) as client:  # type: ignore[arg-type]
        response = await client.post("/echo/a", json={"text": "x" * 100})
    assert response.status_code == 200 and response.json() == {"name": "a", "size": 100}
    assert requests_seen("/echo/{name}", "200") == before + 1


async def test_a_declared_oversized_body_is_refused_before_it_is_read() -> None:
    async with http_server(limited_app()) as client:  # type: ignore[arg-type]
        response = await client.post("/echo/a", json={"text": "x" * LIMIT})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert f"exceeds {LIMIT} bytes" in response.json()["detail"]


async def test_an_oversized_body_sent_without_a_length_is_refused_as_it_arrives() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    async with http_server(limited_app()) as client:  # type: ignore[arg-type]
        response = await client.post(
            "/echo/a", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert f"exceeds {LIMIT} bytes" in response.json()["detail"]


def test_without_an_exporter_spans_are_not_recorded_but_still_propagate() -> None:
    tracer = tracer_provider("t").get_tracer("t")
    with tracer.start_as_current_span("request") as span:
        context = span.get_span_context()
        traceparent = current_traceparent()
    assert not span.is_recording()
    assert context.is_valid and traceparent is not None
    assert traceparent.split("-")[1] == format(context.trace_id, "032x")


def test_with_an_exporter_spans_are_recorded_and_exported() -> None:
    exporter = InMemorySpanExporter()
    provider = tracer_provider("t", exporter)
    with provider.get_tracer("t").start_as_current_span("request") as span:
        assert span.is_recording()
    provider.force_flush()
    assert "request" in {s.name for s in exporter.get_finished_spans()}
