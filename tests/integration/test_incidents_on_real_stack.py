"""The walking skeleton on the real components: an incident created over HTTP lands in MongoDB
(FerretDB) and, through the outbox relay, on its Kafka topic as a CloudEvent; readiness follows
the database; the relay delivers what was pending when it restarts."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from devtools import localstack
from services.incidents import handlers
from services.incidents.domain import OpenIncident, Policy
from services.incidents.handlers import Incidents
from services.incidents.main import IncidentsSettings, create_app
from services.incidents.store import GroupRepository, IncidentRepository
from shared.bus.kafka import KafkaBus
from shared.contracts import Topic
from shared.contracts.codec import KafkaRecord, decode
from shared.store.counters import next_number
from shared.store.relay import OutboxRelay
from tests.support.apps import http_server
from tests.support.kafka import tail
from tests.support.polling import eventually

pytestmark = pytest.mark.infra
Auth = Callable[..., dict[str, str]]


def incidents_settings(
    signing_key: str, mongo_url: str, kafka_bootstrap: str, database: str
) -> IncidentsSettings:
    return IncidentsSettings(
        mongo_url=mongo_url,
        mongo_database=database,
        kafka_bootstrap=kafka_bootstrap,
        auth_mode="dev",
        dev_signing_key=SecretStr(signing_key),
        relay_poll_interval=0.5,
        mongo_timeout_ms=1_500,
        log_json=False,
    )


async def test_incident_created_over_http_is_stored_and_published_as_a_cloudevent(
    signing_key: str, mongo_url: str, kafka_bootstrap: str, mongo_db: object, auth: Auth
) -> None:
    settings = incidents_settings(signing_key, mongo_url, kafka_bootstrap, mongo_db.name)
    app = create_app(settings)
    gc.unfreeze()
    async with http_server(app) as client, tail(kafka_bootstrap, Topic.INCIDENTS) as topic:
        # What start-up made is kept out of full collections' way (shared/runtime.py).
        assert gc.get_freeze_count() > 0
        response = await client.post(
            "/api/v1/incidents",
            json={"title": "Payroll batch failed", "impact": 1, "urgency": 1},
            headers=auth("alice", "requester"),
        )
        assert response.status_code == 201, response.text
        incident = response.json()

        stored = await mongo_db["incidents"].find_one({"_id": incident["id"]})
        assert stored["title"] == "Payroll batch failed" and stored["priority"] == "P1"

        records = await topic.collect(
            lambda rs: any(r.key == incident["id"].encode() for r in rs), what="the event"
        )
    record = next(r for r in records if r.key == incident["id"].encode())
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"itsm.incident.created.v1"
    assert headers["ce_source"] == b"/itsm/incidents"
    assert headers["ce_subject"] == incident["id"].encode()
    assert headers["ce_sequence"] == b"1"
    assert headers["content-type"] == b"application/json"
    assert headers["traceparent"].startswith(b"00-")
    assert json.loads(record.value)["number"] == incident["number"]
    envelope = decode(KafkaRecord(record.key, record.value, tuple(record.headers)))
    assert envelope.data["requester"] == "alice"

    async def outbox_drained() -> list:
        document = await mongo_db["incidents"].find_one({"_id": incident["id"]})
        return document["outbox"]

    await eventually(outbox_drained, until=lambda o: o == [], what="outbox removal")


async def test_relay_delivers_what_was_pending_after_it_is_restarted(
    kafka_bootstrap: str, kafka_bus: KafkaBus, mongo_db: object, mongo_url: str
) -> None:
    repo = IncidentRepository(mongo_db)  # written with no relay running: the process "died"
    incidents = Incidents(
        repo=repo,
        groups=GroupRepository(mongo_db),
        next_number=lambda: next_number(mongo_db, "incident"),
        policy=Policy(),
    )
    ids = []
    now = datetime.now(UTC)
    for i in range(20):
        incident = await handlers.record(
            incidents,
            OpenIncident(title=f"disk full {i}", requester="mon", impact=2, urgency=2),
            now=now,
        )
        ids.append(incident.id.encode())
    assert await mongo_db["incidents"].count_documents({"outbox.0": {"$exists": True}}) == 20

    async def still_pending() -> int:
        return await mongo_db["incidents"].count_documents({"outbox.0": {"$exists": True}})

    async with tail(kafka_bootstrap, Topic.INCIDENTS) as topic:
        relay = OutboxRelay(kafka_bus, [repo.collection], poll_interval=0.2)
        await relay.start()  # the restarted process finds them by polling
        try:
            records = await topic.collect(
                lambda rs: {r.key for r in rs} >= set(ids), what="all pending events"
            )
            await eventually(still_pending, until=lambda n: n == 0, what="outbox removal")
        finally:
            await relay.stop()
    ours = [r for r in records if r.key in set(ids)]
    assert sorted(r.key for r in ours) == sorted(ids)


class PrivateMongo:
    """A FerretDB of this test's own, so stopping it disturbs no other test."""

    def __init__(self, directory: Path) -> None:
        self.port = localstack.free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}"
        self._directory = directory
        self._process = None

    async def start(self) -> None:
        self._process = await asyncio.to_thread(
            localstack.start_ferretdb,
            self.port,
            self._directory / "data",
            self._directory / "ferretdb.log",
        )

    async def stop(self) -> None:
        if self._process is not None:
            await asyncio.to_thread(localstack.stop_process, self._process)
            self._process = None


@pytest.fixture
async def private_mongo(tmp_path: Path) -> AsyncIterator[PrivateMongo]:
    server = PrivateMongo(tmp_path)
    await server.start()
    yield server
    await server.stop()


async def test_readyz_is_503_while_mongodb_is_down_and_200_when_it_is_back(
    signing_key: str, kafka_bootstrap: str, private_mongo: PrivateMongo
) -> None:
    settings = incidents_settings(signing_key, private_mongo.url, kafka_bootstrap, "readiness")
    async with http_server(create_app(settings)) as client:

        async def readyz() -> int:
            return (await client.get("/readyz")).status_code

        assert await readyz() == 200
        await private_mongo.stop()
        down = await eventually(
            lambda: client.get("/readyz"), until=lambda r: r.status_code == 503, what="503"
        )
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["checks"] == {"mongodb": "unreachable", "kafka": "ok"}
        assert "mongodb" in down.json()["detail"]

        await private_mongo.start()
        await eventually(readyz, until=lambda s: s == 200, timeout=30, what="recovery")


async def test_a_write_while_mongodb_is_down_is_a_503_problem(
    signing_key: str, kafka_bootstrap: str, private_mongo: PrivateMongo, auth: Auth
) -> None:
    settings = incidents_settings(signing_key, private_mongo.url, kafka_bootstrap, "outage")
    async with http_server(create_app(settings)) as client:
        await private_mongo.stop()
        response = await client.post(
            "/api/v1/incidents", json={"title": "x"}, headers=auth("alice", "requester")
        )
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"]


async def test_copies_of_one_keyed_create_make_one_incident_and_one_event(
    signing_key: str, mongo_url: str, kafka_bootstrap: str, mongo_db: object, auth: Auth
) -> None:
    """A client repeating a create with its `Idempotency-Key` (a timeout, a lost answer), here
    five copies at once: one incident in MongoDB, one `created` event on Kafka."""
    settings = incidents_settings(signing_key, mongo_url, kafka_bootstrap, mongo_db.name)
    app = create_app(settings)
    body = {"title": "Core switch down", "impact": 1, "urgency": 1}
    headers = auth("alice", "requester") | {"Idempotency-Key": "monitor-4711"}
    async with http_server(app) as client, tail(kafka_bootstrap, Topic.INCIDENTS) as topic:
        answers = await asyncio.gather(
            *(client.post("/api/v1/incidents", json=body, headers=headers) for _ in range(5))
        )
        assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
        [incident_id] = {a.json()["id"] for a in answers}
        records = await topic.collect(
            lambda rs: any(r.key == incident_id.encode() for r in rs), what="the event"
        )
    assert await mongo_db["incidents"].count_documents({"title": "Core switch down"}) == 1
    events = {
        (dict(r.headers)["ce_id"], dict(r.headers)["ce_sequence"])
        for r in records
        if r.key == incident_id.encode()
    }
    assert len(events) == 1 and next(iter(events))[1] == b"1"  # a redelivery is the same event
