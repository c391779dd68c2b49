"""An in-memory span exporter reached over OTLP/HTTP: the services under test run as separate
processes and export their spans (the standard `OTEL_EXPORTER_OTLP_ENDPOINT`) to this receiver
on loopback, which keeps them in memory for the test to read."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    scope: str
    attributes: dict[str, Any]
    links: tuple[str, ...]  # span ids


@dataclass
class SpanCollector:
    spans: list[ExportedSpan] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/traces")
        async def export(request: Request) -> Response:
            body = await request.body()
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            exported = ExportTraceServiceRequest()
            exported.ParseFromString(body)
            self.spans.extend(_spans(exported))
            return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)

        return app

    def trace(self, trace_id: str) -> list[ExportedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]

    def named(self, name: str) -> list[ExportedSpan]:
        return [span for span in self.spans if span.name == name]

    def by_id(self, trace_id: str) -> dict[str, ExportedSpan]:
        return {span.span_id: span for span in self.trace(trace_id)}

    def ancestry(self, span: ExportedSpan) -> list[ExportedSpan]:
        """The span and its ancestors up to the root (or the first one not exported)."""
        spans = self.by_id(span.trace_id)
        chain = [span]
        while chain[-1].parent_id in spans:
            chain.append(spans[chain[-1].parent_id])
        return chain


def _spans(exported: ExportTraceServiceRequest) -> Iterable[ExportedSpan]:
    for resource_spans in exported.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ExportedSpan(
                    service=str(resource.get("service.name", "")),
                    name=span.name,
                    kind=span.kind,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_id=span.parent_span_id.hex(),
                    scope=scope_spans.scope.name,
                    attributes=_attributes(span.attributes),
                    links=tuple(link.span_id.hex() for link in span.links),
                )


def _attributes(pairs: Iterable[Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        which = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, which) if which else None
    return values
