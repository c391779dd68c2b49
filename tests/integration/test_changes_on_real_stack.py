"""Issue 6 on the real components: each change action's event on the topic in order; a CDEvents
deployment on the ingest topic records a standard change; an incident on a recently changed item
gets a suggested link, and one naming a change is linked to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from services.changes.main import ChangesSettings
from services.changes.main import create_app as create_changes
from services.incidents.main import IncidentsSettings
from services.incidents.main import create_app as create_incidents
from shared.bus.kafka import KafkaBus
from shared.contracts import Envelope, Topic
from shared.contracts.codec import KafkaRecord, decode
from tests.integration.conftest import scratch_database
from tests.support.apps import http_server
from tests.support.kafka import tail
from tests.support.polling import eventually
from tests.unit.test_changes_api import PEOPLE, Api

pytestmark = pytest.mark.infra
Auth = Any


def common(signing_key: str, kafka_bootstrap: str, mongo_url: str, database: str) -> dict[str, Any]:
    return dict(
        mongo_url=mongo_url, mongo_database=database, kafka_bootstrap=kafka_bootstrap,
        auth_mode="dev", dev_signing_key=SecretStr(signing_key), relay_poll_interval=0.5,
        log_json=False,
    )  # fmt: skip


@pytest.fixture
async def api(
    signing_key: str, kafka_bootstrap: str, mongo_url: str, auth: Auth
) -> AsyncIterator[Api]:
    async with scratch_database(mongo_url) as database:
        settings = ChangesSettings(**common(signing_key, kafka_bootstrap, mongo_url, database.name))
        async with http_server(create_changes(settings)) as client:
            a = Api(client, auth)
            for item in ("rtr-1", "db-1"):
                await a.call("POST", "/api/v1/configuration-items", "manager", {"name": item}, 201)
            yield a


async def test_each_change_actions_event_is_on_the_topic_in_order(
    api: Api, kafka_bootstrap: str
) -> None:
    async with tail(kafka_bootstrap, Topic.CHANGES) as topic:
        change = await api.create()
        cid = change["id"]
        await api.act(change, "submit", "requester")
        await api.act(change, "assessment", "manager")
        await api.act(change, "approvals", "manager", {"decision": "approve"})
        await api.act(change, "start", "implementer")
        await api.act(change, "complete", "implementer", {"outcome": "successful"})
        await api.act(change, "close", "manager")
        records = await topic.collect(
            lambda rs: sum(r.key == cid.encode() for r in rs) >= 8, what="8 events"
        )
    events = [
        decode(KafkaRecord(r.key, r.value, tuple(r.headers)))
        for r in records
        if r.key == cid.encode()
    ]
    assert [e.type.split(".")[2] for e in events] == [
        "created", "submitted", "assessed", "approval_recorded", "approved", "started", "completed", "closed",
    ]  # fmt: skip
    assert [e.sequence for e in events] == list(range(1, 9))


def deployed(unique: str, service: str) -> Envelope:
    """A CDEvents v0.4 `service.deployed` event as a CI/CD pipeline publishes it."""
    return Envelope(
        type="dev.cdevents.service.deployed.0.2.0",
        source="/pipelines/github/acme/payments",
        subject=service,
        sequence=0,
        id=f"deploy-{unique}",
        data={
            "context": {"version": "0.4.1", "id": f"deploy-{unique}", "source": "/pipelines/github/acme/payments",
                        "type": "dev.cdevents.service.deployed.0.2.0", "timestamp": "2026-12-04T10:00:00Z"},
            "subject": {"id": service, "source": "/pipelines/github/acme/payments", "type": "service",
                        "content": {"environment": {"id": "production"}, "artifactId": f"pkg:oci/{service}@sha256:abc"}},
        },
    )  # fmt: skip


async def test_a_deployment_cloudevent_records_a_standard_change(
    api: Api, kafka_bus: KafkaBus, unique: str
) -> None:
    service = f"payments-{unique}"
    event = deployed(unique, service)
    await kafka_bus.publish(Topic.INGEST, [event, event])  # delivered twice: recorded once

    async def recorded() -> list[dict]:
        listed = await api.call("GET", f"/api/v1/changes?item={service}", "manager")
        return listed["items"]

    [change] = await eventually(recorded, timeout=60, what="the standard change")
    assert change["change_type"] == "standard" and change["status"] == "completed"
    assert change["outcome"] == "successful" and change["configuration_items"] == [service]
    assert "production" in change["title"]
    marker = deployed(f"{unique}-2", f"{service}-marker")
    await kafka_bus.publish(Topic.INGEST, [marker])
    await eventually(lambda: api.call("GET", f"/api/v1/changes?item={service}-marker", "manager"),
                     until=lambda page: page["total"] == 1, timeout=60, what="the marker")  # fmt: skip
    assert len(await recorded()) == 1


async def test_incidents_are_linked_to_the_changes_they_name_or_recently_touched(
    api: Api, signing_key: str, kafka_bootstrap: str, mongo_url: str, auth: Auth
) -> None:
    now = datetime.now(UTC)
    change = await api.create(
        configuration_items=["db-1"],
        planned_start=(now - timedelta(hours=2)).isoformat(),
        planned_end=(now - timedelta(hours=1)).isoformat(),
    )
    await api.act(change, "submit", "requester")
    await api.act(change, "assessment", "manager")
    await api.act(change, "approvals", "manager", {"decision": "approve"})
    await api.act(change, "start", "implementer")
    await api.act(change, "complete", "implementer", {"outcome": "successful"})
    async with scratch_database(mongo_url) as database:
        settings = IncidentsSettings(
            **common(signing_key, kafka_bootstrap, mongo_url, database.name)
        )
        async with http_server(create_incidents(settings)) as incidents:
            requester = auth(*PEOPLE["requester"])
            suggested = await incidents.post(
                "/api/v1/incidents",
                json={"title": "DB latency spikes", "configuration_item": "db-1"},
                headers=requester,
            )
            named = await incidents.post(
                "/api/v1/incidents",
                json={"title": f"Checkout errors since {change['number']}"},
                headers=requester,
            )
            assert suggested.status_code == named.status_code == 201

            async def links() -> dict:
                return await api.call("GET", f"/api/v1/changes/{change['id']}", "manager")

            linked = await eventually(
                links,
                until=lambda c: c["suggested_incidents"] and c["caused_incidents"],
                timeout=60,
                what="both links",
            )
    assert linked["suggested_incidents"] == [suggested.json()["id"]]
    assert linked["caused_incidents"] == [named.json()["id"]]
    # and the other way round, as the console's incident view asks it (FerretDB: an $or of two
    # equalities on arrays)
    for incident in (suggested.json()["id"], named.json()["id"]):
        page = await api.call("GET", f"/api/v1/changes?incident={incident}", "manager")
        assert [c["id"] for c in page["items"]] == [change["id"]] and page["total"] == 1
        hidden = await api.call("GET", f"/api/v1/changes?incident={incident}", "other")
        assert hidden == {**hidden, "items": [], "total": 0}  # not their change


async def test_copies_of_one_keyed_change_request_make_one_change_and_one_event(
    api: Api, kafka_bootstrap: str
) -> None:
    """A pipeline repeating its change request with the same `Idempotency-Key` (a timeout, a
    lost answer), here five copies at once: one change in MongoDB, one `created` event."""
    body = {
        "title": "Rotate TLS certificates", "change_type": "normal",
        "configuration_items": ["rtr-1"],
        "plan": {"implementation": "rotate", "backout": "restore", "test": "curl"},
    }  # fmt: skip
    headers = api.h("requester") | {"Idempotency-Key": "pipeline-run-1234"}
    async with tail(kafka_bootstrap, Topic.CHANGES) as topic:
        answers = await asyncio.gather(
            *(api.client.post("/api/v1/changes", json=body, headers=headers) for _ in range(5))
        )
        assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
        [change_id] = {a.json()["id"] for a in answers}
        records = await topic.collect(
            lambda rs: any(r.key == change_id.encode() for r in rs), what="the event"
        )
    listed = await api.call("GET", "/api/v1/changes?q=Rotate", "manager")
    assert [c["id"] for c in listed["items"]] == [change_id]
    events = {decode(r).id for r in records if r.key == change_id.encode()}
    assert len(events) == 1  # a redelivery would be the same event
