"""Issue 3 on the real components: every action's event on the Kafka topic in order with an
increasing sequence; an alert storm of 1,000 firings over 10 fingerprints gives exactly 10
incidents with the right counts; the same alert delivered twice counts once; Alertmanager's
webhook over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from services.incidents.main import IncidentsSettings, create_app
from shared.bus.kafka import KafkaBus
from shared.contracts import Envelope, Topic
from shared.contracts.alerts import AlertFired
from shared.contracts.codec import KafkaRecord, decode
from tests.support.apps import http_server
from tests.support.incidents import BASE, Auth, World
from tests.support.kafka import tail
from tests.support.polling import eventually

pytestmark = pytest.mark.infra
T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


@pytest.fixture
async def world(
    signing_key: str, mongo_url: str, kafka_bootstrap: str, mongo_db: Any, auth: Auth
) -> AsyncIterator[World]:
    settings = IncidentsSettings(
        mongo_url=mongo_url,
        mongo_database=mongo_db.name,
        kafka_bootstrap=kafka_bootstrap,
        auth_mode="dev",
        dev_signing_key=SecretStr(signing_key),
        relay_poll_interval=0.5,
        log_json=False,
    )
    async with http_server(create_app(settings)) as client:
        w = World(client, auth)
        await w.setup_groups()
        yield w


async def test_each_actions_event_is_on_the_topic_in_order_with_increasing_sequence(
    world: World, kafka_bootstrap: str
) -> None:
    async with tail(kafka_bootstrap, Topic.INCIDENTS) as topic:
        incident = await world.incident()
        iid = incident["id"]
        for action, persona, body in [
            ("start", "member", None),
            ("replies", "member", {"body": "looking into it"}),
            ("hold", "member", {"reason": "awaiting_vendor"}),
            ("resume", "member", None),
            ("escalation", "member", {"to_group": "network", "reason": "routing issue"}),
            ("resolve", "manager", {"code": "fixed", "notes": "route restored"}),
            ("rating", "owner", {"score": 5}),
            ("close", "owner", None),
        ]:
            await world.do(iid, action, persona, body)
        records = await topic.collect(
            lambda rs: sum(r.key == iid.encode() for r in rs) >= 11, what="all 11 events"
        )
    events = [
        decode(KafkaRecord(r.key, r.value, tuple(r.headers)))
        for r in records
        if r.key == iid.encode()
    ]
    assert [e.type.split(".")[2] for e in events] == [
        "created", "assigned", "status_changed", "replied", "status_changed", "status_changed",
        "escalated", "assigned", "resolved", "rated", "closed",
    ]  # fmt: skip
    assert [e.sequence for e in events] == list(range(1, 12))
    assert {e.data["incident_id"] for e in events} == {iid}


def firing(fingerprint: str, starts: datetime, source: str = "/prometheus/test") -> Envelope:
    data = AlertFired(
        fingerprint=fingerprint,
        alertname="HighLatency",
        starts_at=starts,
        severity="warning",
        summary=f"latency high ({fingerprint})",
    )
    return Envelope(
        type=data.event_type,
        source=source,
        subject=fingerprint,
        sequence=0,
        data=data.model_dump(mode="json"),
    )


async def open_from_alerts(world: World, prefix: str) -> list[dict]:
    response = await world.client.get(f"{BASE}?limit=100", headers=world.headers("manager"))
    return [
        i
        for i in response.json()["items"]
        if i["alert"] and i["alert"]["fingerprint"].startswith(prefix)
    ]


async def test_an_alert_storm_gives_one_incident_per_fingerprint_with_the_right_counts(
    world: World, kafka_bus: KafkaBus, unique: str
) -> None:
    fingerprints = [f"storm-{unique}-{n}" for n in range(10)]
    storm = [
        firing(fingerprints[i % 10], T0 + timedelta(seconds=i)) for i in range(1000)
    ]  # each fingerprint fires 100 times, each firing with its own start
    await kafka_bus.publish(Topic.INGEST, storm)

    async def counts() -> dict[str, int]:
        found = await open_from_alerts(world, f"storm-{unique}")
        return {i["alert"]["fingerprint"]: i["alert"]["occurrences"] for i in found}

    settled = await eventually(
        counts, until=lambda c: sum(c.values()) == 1000, timeout=120, interval=0.5, what="storm"
    )
    assert settled == dict.fromkeys(fingerprints, 100)
    assert len(await open_from_alerts(world, f"storm-{unique}")) == 10


async def test_the_same_alert_delivered_twice_counts_once(
    world: World, kafka_bus: KafkaBus, unique: str
) -> None:
    fingerprint = f"dup-{unique}"
    first = firing(fingerprint, T0)
    again = firing(fingerprint, T0 + timedelta(minutes=5))
    # The same records twice, as at-least-once delivery (or a re-sending monitor) produces.
    for envelope in (first, first, again, again):
        await kafka_bus.publish(Topic.INGEST, [envelope])
    marker = firing(f"{fingerprint}-marker", T0)  # processed after everything above
    await kafka_bus.publish(Topic.INGEST, [marker])

    async def seen() -> list[dict]:
        return await open_from_alerts(world, fingerprint)

    found = await eventually(seen, until=lambda f: len(f) == 2, timeout=60, what="both incidents")
    counts = {i["alert"]["fingerprint"]: i["alert"]["occurrences"] for i in found}
    assert counts == {fingerprint: 2, f"{fingerprint}-marker": 1}
    incident = next(i for i in found if i["alert"]["fingerprint"] == fingerprint)
    assert incident["opened_at"].startswith("2026-12-04T08:00:00")  # the alert's start time


async def test_alertmanager_webhook_over_http_opens_and_resolves(world: World, unique: str) -> None:
    fingerprint = f"am-{unique}"
    payload: dict[str, Any] = {
        "version": "4",
        "status": "firing",
        "receiver": "itsm",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "severity": "critical", "instance": "db-1"},
                "annotations": {"summary": "Disk full on db-1"},
                "startsAt": "2026-12-04T07:58:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": fingerprint,
            }
        ],
    }
    url = "/api/v1/alerts/alertmanager"
    accepted = await world.client.post(url, json=payload, headers=world.headers("machine"))
    assert accepted.status_code == 202, accepted.text
    [incident] = await eventually(lambda: open_from_alerts(world, fingerprint), what="incident")
    assert incident["priority"] == "P1" and incident["configuration_item"] == "db-1"
    resolved = json.loads(json.dumps(payload))
    resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
    resolved["alerts"][0]["endsAt"] = "2026-12-04T08:10:00Z"
    await world.client.post(url, json=resolved, headers=world.headers("machine"))

    async def status() -> str:
        got = await world.client.get(f"{BASE}/{incident['id']}", headers=world.headers("manager"))
        return got.json()["status"]

    await eventually(status, until=lambda s: s == "resolved", what="auto-resolution")
    bad = await world.client.post(
        url, json={"status": "firing", "alerts": []}, headers=world.headers("machine")
    )
    assert bad.status_code == 422
