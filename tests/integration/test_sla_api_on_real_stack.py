"""The SLA read API on the real components: SLA facts and a KPI snapshot published to Kafka are
materialised in FerretDB by the service's consumers, served over HTTP, and streamed live to a
server-sent event client; a redelivered fact changes nothing and a poison record is
dead-lettered while the partition moves on."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.sla.domain.kpi_partials import DurationStat
from services.sla.domain.kpis import Dims, KpiFigures, KpiPartial
from services.sla.main import SlaApiSettings, create_app
from shared.bus.kafka import KafkaBus
from shared.contracts import Topic
from shared.contracts.codec import KafkaRecord
from shared.contracts.envelope import Envelope
from shared.contracts.sla import SlaBreached, SlaPaused, SlaStarted
from shared.contracts.sla_kpis import KpiUpdated
from tests.support.apps import http_server
from tests.support.kafka import tail
from tests.support.notify import assigned, group_saved
from tests.support.polling import eventually
from tests.unit.test_sla_api_handlers import fact
from tests.unit.test_sla_api_stream import EventStream

pytestmark = pytest.mark.infra
Auth = Callable[..., dict[str, str]]
M = timedelta(minutes=1)


def kpi_snapshot(start: datetime) -> Envelope:
    partial = KpiPartial(
        source_topic=Topic.INCIDENTS,
        source_partition=0,
        granularity="hour",
        window_start=start,
        dims=Dims(team="network", priority="P1"),
        # A measured first response: its sketch holds nested arrays, which FerretDB refuses
        # as such (the read model stores the partial as JSON text).
        figures=KpiFigures(
            opened=3,
            resolved=1,
            sla_met=1,
            sla_missed=1,
            breaches=1,
            first_response=DurationStat.of(240.0),
        ),
        backlog=2,
        watermark=41,
    )
    return Envelope(
        type=KpiUpdated.event_type,
        source="/itsm/sla",
        subject=partial.key,
        sequence=partial.sequence,
        data=KpiUpdated.model_validate(partial.to_document()).model_dump(mode="json"),
        time=start,
    )


async def served(client: httpx.AsyncClient, path: str, headers: dict, until: Any) -> Any:
    async def probe() -> Any:
        response = await client.get(path, headers=headers)
        return response.json() if response.status_code == 200 else response.status_code

    return await eventually(
        probe, until=lambda b: isinstance(b, dict) and until(b), timeout=30, what=path
    )


async def test_facts_on_kafka_are_materialised_served_and_streamed(
    signing_key: str,
    mongo_url: str,
    kafka_bootstrap: str,
    kafka_bus: KafkaBus,
    mongo_db: Any,
    unique: str,
    auth: Auth,
) -> None:
    facts_topic, kpis_topic = f"test.sla.facts.{unique}", f"test.sla.kpis.{unique}"
    incidents_topic = f"test.sla.incidents.{unique}"
    settings = SlaApiSettings(
        mongo_url=mongo_url,
        mongo_database=mongo_db.name,
        kafka_bootstrap=kafka_bootstrap,
        auth_mode="dev",
        dev_signing_key=SecretStr(signing_key),
        facts_topic=facts_topic,
        kpis_topic=kpis_topic,
        incidents_topic=incidents_topic,
        consumer_group=f"sla-api-{unique}",
        topic_partitions=3,
        stream_heartbeat_seconds=1,
        mongo_timeout_ms=3_000,
        log_json=False,
    )
    now = datetime.now(UTC).replace(microsecond=0)
    ticket = f"inc-{unique}"
    agent = auth("ann", "agent")
    started = fact(SlaStarted, 1, ticket=ticket, at=now - 10 * M, deadline=now + 50 * M)
    first_response = fact(
        SlaStarted, 2, ticket=ticket, metric="first_response", target=300,
        at=now - 10 * M, deadline=now - 5 * M, priority="P2",
    )  # fmt: skip
    breach = fact(
        SlaBreached, 3, ticket=ticket, metric="first_response", target=300, elapsed=300,
        at=now - 5 * M, deadline=now - 5 * M,
    )  # fmt: skip

    async with http_server(create_app(settings)) as client:
        # ann's group has the ticket (from the incident events on Kafka); otto's does not.
        await kafka_bus.publish(
            incidents_topic,
            [
                group_saved("desk", "L2", ["ann"]),
                group_saved("network", "L2", ["otto"]),
                assigned(ticket, 2, "desk", tier="L2"),
            ],
        )

        async def followed() -> int:
            return len(await mongo_db["sla_assignments"].find({"_id": ticket}).to_list()) + len(
                await mongo_db["sla_groups"].find({"members": "ann"}).to_list()
            )

        await eventually(followed, until=lambda n: n == 2, timeout=30, what="who works what")
        async with client.stream(
            "GET", f"/api/v1/sla/stream?ticket={ticket}", headers=agent
        ) as response:
            assert response.status_code == 200
            stream = EventStream(response.aiter_lines())
            await stream.comment("connected")
            await kafka_bus.publish(facts_topic, [started, first_response, breach])
            await kafka_bus.publish(kpis_topic, [kpi_snapshot(now.replace(minute=0, second=0))])
            seen = [await stream.next_event(timeout=30) for _ in range(3)]
        assert [e["event"] for e in seen] == [
            "itsm.sla.started.v1", "itsm.sla.started.v1", "itsm.sla.breached.v1",
        ]  # fmt: skip
        assert json.loads(seen[2]["data"])["data"]["metric"] == "first_response"

        body = await served(
            client, f"/api/v1/sla/tickets/{ticket}", agent,
            lambda b: [t["last_fact"] for t in b["timers"]] == ["breached", "started"],
        )  # fmt: skip
        first, resolution = body["timers"]
        assert first["breached"] and first["remaining_seconds"] <= -300
        assert 2_900 <= resolution["remaining_seconds"] <= 3_000
        assert 16 <= resolution["percent_used"] <= 18

        breached = (await client.get("/api/v1/sla/breached", headers=agent)).json()
        assert [(t["ticket_id"], t["metric"]) for t in breached["items"]] == [
            (ticket, "first_response")
        ]
        at_risk = (await client.get("/api/v1/sla/at-risk?within=PT1H", headers=agent)).json()
        assert [(t["ticket_id"], t["metric"]) for t in at_risk["items"]] == [(ticket, "resolution")]
        outsider = auth("otto", "agent")  # network's: neither the ticket nor its timers
        assert (
            await client.get(f"/api/v1/sla/tickets/{ticket}", headers=outsider)
        ).status_code == 404
        for path in ("/api/v1/sla/breached", "/api/v1/sla/at-risk?within=PT1H"):
            assert (await client.get(path, headers=outsider)).json()["total"] == 0

        kpis = await served(
            client, "/api/v1/kpis?group_by=team&group_by=priority", agent,
            lambda b: b["total"]["partials"] == 1,
        )  # fmt: skip
        assert kpis["total"]["opened"] == 3 and kpis["total"]["sla_compliance_percent"] == 50.0
        assert kpis["total"]["first_responses"] == 1
        assert 235 <= kpis["total"]["first_response_p50"] <= 245  # the sketch, read back
        assert kpis["series"][0]["group"] == {"team": "network", "priority": "P1"}

        # Paused, then the start redelivered late, then a poison record: the timer stays paused
        # and the partition moves on to the fact behind the poison record.
        paused = fact(
            SlaPaused, 4, ticket=ticket, status="paused", elapsed=700, deadline=None, at=now
        )
        async with tail(kafka_bootstrap, Topic.DEAD_LETTER) as dead_letters:
            await kafka_bus.publish(facts_topic, [paused, started])
            await kafka_bus.publish_record(
                facts_topic, KafkaRecord(ticket.encode(), b"\xff not an event", ())
            )
            after = fact(SlaStarted, 5, ticket=ticket, metric="ola:network", at=now)
            await kafka_bus.publish(facts_topic, [after])
            body = await served(
                client, f"/api/v1/sla/tickets/{ticket}", agent, lambda b: len(b["timers"]) == 3
            )
            records = await dead_letters.collect(
                lambda rs: any(dict(r.headers).get("dlq-source-topic") == facts_topic.encode()
                               for r in rs),
                what="the poison record",
            )  # fmt: skip
        resolution = next(t for t in body["timers"] if t["metric"] == "resolution")
        assert resolution["paused"] and resolution["remaining_seconds"] == 3600 - 700
        letter = next(
            r for r in records if dict(r.headers).get("dlq-source-topic") == facts_topic.encode()
        )
        assert letter.value == b"\xff not an event"

    stored = await mongo_db["sla_timers"].find_one({"_id": f"{ticket}:resolution"})
    assert stored["status"] == "paused" and stored["last_sequence"] == 4
    assert await mongo_db["sla_kpi_partials"].count_documents({}) == 1
