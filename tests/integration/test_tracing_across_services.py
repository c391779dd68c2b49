"""One OpenTelemetry trace per incident, across separate service processes and the real broker.

The incidents API, the SLA worker (Faust) and notify run as their own processes on the real
Kafka and FerretDB, exporting spans over OTLP/HTTP (the standard `OTEL_*` variables) to an
in-memory span collector on loopback; mail goes to a real SMTP server. A P1 incident created
over HTTP breaches its 2-second first-response target, and notify mails the on-call engineer.
The test then reads the trace back:

- the mail's `email send` span descends, parent by parent, from the HTTP request that created
  the incident: the relay's publish and aiokafka's send (incidents), Faust's process span and
  the handling (SLA worker), the alerts found due by the wake-up, notify's consumer span and
  the delivery (notify) — one trace id throughout;
- the instrumentation packages are on: FastAPI's server span, PyMongo's spans of the async
  client under the request, aiokafka's send spans;
- every record of the incident and its SLA facts carries exactly one `traceparent` header;
- the structlog lines written inside the trace carry its `trace_id` and a `span_id`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from opentelemetry.instrumentation.utils import suppress_http_instrumentation

from services.sla.processor.topics import changelog_topic_name
from shared.bus.offsets import start_new_group_at_the_end
from shared.contracts.topics import Topic
from tests.conftest import TokenFactory
from tests.integration.conftest import scratch_database
from tests.support.apps import free_port, http_server
from tests.support.kafka import ensure_platform_topics, tail
from tests.support.notify import Mailbox, ladder
from tests.support.otlp import ExportedSpan, SpanCollector
from tests.support.polling import eventually
from tests.support.sla_workers import (
    ServiceProcess,
    api_argv,
    delete_topics_of,
    incident_feed,
    partition_count,
    run_id,
    wait_until_answering,
    worker_env,
)

pytestmark = [pytest.mark.infra, pytest.mark.timeout(150)]

SERVER, CONSUMER, PRODUCER = 2, 5, 4  # opentelemetry.proto Span.SpanKind values
PYMONGO = "opentelemetry.instrumentation.pymongo"


@contextlib.asynccontextmanager
async def running(processes: list[ServiceProcess]) -> AsyncIterator[list[ServiceProcess]]:
    try:
        for process in processes:
            await process.start()
        yield processes
    finally:
        for process in processes:
            await process.stop()


async def until_ready(client: httpx.AsyncClient, process: ServiceProcess) -> None:
    async def probe() -> int:
        process.check_alive()
        with contextlib.suppress(httpx.TransportError):
            return (await client.get("/readyz")).status_code
        return 0

    await eventually(probe, until=lambda s: s == 200, timeout=40, what=f"{process.name} ready")


def trace_headers(records: list[Any], key: str) -> list[list[bytes]]:
    return [
        [value for name, value in r.headers if name == "traceparent"]
        for r in records
        if r.key == key.encode()
    ]


def log_entries(process: ServiceProcess) -> list[dict[str, Any]]:
    entries = []
    for line in process.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
    return entries


async def test_one_trace_follows_an_incident_from_the_request_to_the_escalation_mail(
    tmp_path: Path, signing_key: str, mint: TokenFactory, mongo_url: str, kafka_bootstrap: str
) -> None:
    await ensure_platform_topics(kafka_bootstrap)
    run = run_id()
    app_id, notify_group = f"itsm-sla-trace-{run}", f"notify-trace-{run}"
    for group, topic in (
        (f"{notify_group}-incidents", Topic.INCIDENTS),
        (f"{notify_group}-sla", Topic.SLA),
    ):
        await start_new_group_at_the_end(kafka_bootstrap, group, [topic])  # no history
    collector, mailbox = SpanCollector(), Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    ports = {"incidents": free_port(), "notify": free_port()}
    try:
        async with (
            scratch_database(mongo_url) as database,
            http_server(collector.app()) as otlp,
            tail(kafka_bootstrap, Topic.INCIDENTS) as incident_topic,
            tail(kafka_bootstrap, Topic.SLA) as sla_topic,
        ):
            common = {
                "ITSM_MONGO_URL": mongo_url,
                "ITSM_MONGO_DATABASE": database.name,
                "ITSM_AUTH_MODE": "dev",
                "ITSM_DEV_SIGNING_KEY": signing_key,
                "ITSM_LOG_JSON": "true",
                "ITSM_RELAY_POLL_INTERVAL": "0.5",
                "OTEL_EXPORTER_OTLP_ENDPOINT": str(otlp.base_url),
                "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within 0.2 s, not 5 s
                # the shared broker carries other tests' events too: keep every span
                "OTEL_BSP_MAX_QUEUE_SIZE": "200000",
            }
            partitions = await partition_count(kafka_bootstrap, Topic.INCIDENTS)
            worker = ServiceProcess(
                "sla-worker",
                {
                    **worker_env(
                        kafka_bootstrap, app_id, partitions=partitions,
                        targets={"P1": {"first_response": 2.0}}, data_dir=tmp_path / "sla",
                    ),
                    **common,
                },
                tmp_path / "sla-worker.log",
            )  # fmt: skip
            incidents = ServiceProcess(
                "incidents",
                {**os.environ, **common},
                tmp_path / "incidents.log",
                api_argv("services.incidents.main:create_app", ports["incidents"]),
            )
            notify = ServiceProcess(
                "notify",
                {
                    **os.environ, **common,
                    "ITSM_NOTIFY_CONSUMER_GROUP": notify_group,
                    "ITSM_NOTIFY_SMTP_HOST": "127.0.0.1",
                    "ITSM_NOTIFY_SMTP_PORT": str(smtp.port),
                    "ITSM_NOTIFY_SMTP_SECURITY": "plain",
                    "ITSM_NOTIFY_PUBLIC_BASE_URL": "https://itsm.test",
                    "ITSM_NOTIFY_ACK_LINK_KEY": "k" * 32,
                    "ITSM_NOTIFY_DELIVERY_POLL_SECONDS": "0.2",
                },
                tmp_path / "notify.log",
                api_argv("services.notify.main:create_app", ports["notify"]),
            )  # fmt: skip
            async with (
                running([worker, incidents, notify]),
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['incidents']}") as api,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['notify']}") as notify_api,
                incident_feed(kafka_bootstrap) as feed,
            ):
                await until_ready(api, incidents)
                await until_ready(notify_api, notify)
                await wait_until_answering(sla_topic, feed, [worker], f"probe-{run}", partitions)
                boss = {"Authorization": f"Bearer {mint('boss', 'manager')}"}
                policy = ladder(f"trace-{run}")
                policy["match"]["priorities"] = ["P1"]
                response = await notify_api.post(
                    "/api/v1/notify/policies", json=policy, headers=boss
                )
                assert response.status_code == 201, response.text
                response = await notify_api.put(
                    "/api/v1/notify/people/alice",
                    json={"email": "alice@example.com", "name": "Alice"},
                    headers=boss,
                )
                assert response.status_code == 200, response.text

                requester = {"Authorization": f"Bearer {mint('rita', 'requester')}"}
                # The request starts the trace: this test process may have httpx instrumented
                # (another test's app did it) with spans off, and an unsampled `traceparent`
                # from the caller would, rightly, keep the platform from sampling the trace.
                with suppress_http_instrumentation():
                    response = await api.post(
                        "/api/v1/incidents",
                        json={"title": "Checkout is down", "impact": 1, "urgency": 1},
                        headers=requester,
                    )
                assert response.status_code == 201, response.text
                incident_id = response.json()["id"]

                async def sent() -> list[ExportedSpan]:
                    for process in (worker, incidents, notify):
                        process.check_alive()
                    # other tests' P1 breaches on the shared topic may page alice too
                    return [
                        span
                        for span in collector.named("email send")
                        if span.attributes.get("itsm.notify.outcome") == "delivered"
                        and any(
                            s.attributes.get("itsm.ticket_id") == incident_id
                            for s in collector.ancestry(span)
                        )
                    ]

                [send] = await eventually(sent, timeout=60, what="the escalation mail's span")
                assert mailbox.to("alice@example.com", response.json()["number"])

                async def chain() -> list[ExportedSpan]:  # every process has exported its part
                    return collector.ancestry(send)

                await eventually(
                    chain, until=lambda c: c[-1].kind == SERVER, timeout=20, what="the whole trace"
                )
                await incident_topic.collect(
                    lambda _: bool(trace_headers(incident_topic.records, incident_id)),
                    what="the incident's records",
                )
                await sla_topic.collect(
                    lambda _: bool(trace_headers(sla_topic.records, incident_id)),
                    what="the incident's SLA facts",
                )
    finally:
        smtp.stop()
        await delete_topics_of(kafka_bootstrap, app_id)

    chain = collector.ancestry(send)
    root = chain[-1]
    assert (root.service, root.kind, root.name) == (
        "itsm-incidents",
        SERVER,
        "POST /api/v1/incidents",
    ), [(s.service, s.name) for s in chain]
    assert root.parent_id == ""
    hops = [(s.service, s.name) for s in reversed(chain)]
    assert hops == [
        ("itsm-incidents", "POST /api/v1/incidents"),
        ("itsm-incidents", f"{Topic.INCIDENTS} publish"),
        ("itsm-incidents", f"{Topic.INCIDENTS} send"),
        ("itsm-sla-processor", f"{Topic.INCIDENTS} process"),
        ("itsm-sla-processor", f"{Topic.INCIDENTS} handle"),
        ("itsm-sla-processor", "sla alerts due"),
        ("itsm-notify", f"{Topic.SLA} process"),
        ("itsm-notify", "notify deliver"),
        ("itsm-notify", "email send"),
    ], hops
    trace = collector.trace(root.trace_id)
    [due_span] = [s for s in chain if s.name == "sla alerts due"]
    assert due_span.attributes["itsm.ticket_id"] == incident_id
    assert due_span.links, "the alerts link to the wake-up that found them due"
    # the instrumentation packages: PyMongo's spans of the async client under the request
    writes = [s for s in trace if s.scope == PYMONGO and s.parent_id == root.span_id]
    assert writes and all(s.service == "itsm-incidents" for s in writes)
    assert any(s.name.endswith("insert") or "insert" in s.name for s in writes), writes
    sends = {s.name for s in trace if s.kind == PRODUCER}
    assert f"{Topic.INCIDENTS} send" in sends and f"{Topic.SLA} send" in sends
    # the table's changelog records are state, not events: sent without a span (untraced_sends)
    every_send = {s.name for s in collector.spans if s.kind == PRODUCER}
    assert f"{changelog_topic_name(app_id)} send" not in every_send, every_send
    consumed = [s for s in trace if s.kind == CONSUMER and s.service == "itsm-notify"]
    assert consumed
    # exactly one traceparent per record, each in the incident's trace
    for headers in [
        *trace_headers(incident_topic.records, incident_id),
        *trace_headers(sla_topic.records, incident_id),
    ]:
        assert len(headers) == 1, headers
        assert headers[0].decode().split("-")[1] == root.trace_id
    # structlog lines inside the trace carry its ids
    traced_lines = [
        entry
        for process in (incidents, worker, notify)
        for entry in log_entries(process)
        if entry.get("trace_id") == root.trace_id
    ]
    assert traced_lines, "no log line carries the incident's trace id"
    assert all(len(entry.get("span_id", "")) == 16 for entry in traced_lines)
