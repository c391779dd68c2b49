"""End to end on the real stack: a calendar and a policy created through the policy API
(FerretDB, outbox relay to the real Kafka) reach a running SLA worker process, which measures the
next incident with them — and a new version after it — without a restart.

The broker and the policies topic are shared: the worker has its own Faust app id and starts at
the end of the incident topic, the policy narrows to a service of this run only, and the API
writes to a scratch database.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from services.sla.policies.api import router
from services.sla.policies.wiring import build
from shared.contracts.codec import decode
from shared.contracts.topics import Topic
from shared.ids import uuid7
from shared.runtime import service_app
from shared.settings import ServiceSettings
from shared.store.mongo import create_client
from tests.faust.events import created as incident_created
from tests.faust.events import record
from tests.faust.test_breach_on_real_broker import (
    Incidents,
    delete_topics_of,
    facts_of,
    partition_count,
    wait_until_ready,
    worker,
)
from tests.support.apps import http_server
from tests.support.kafka import ensure_platform_topics, tail
from tests.support.polling import eventually

pytestmark = [pytest.mark.infra, pytest.mark.timeout(120)]

ALL_WEEK = {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


async def test_a_policy_created_through_the_api_reaches_a_running_worker(
    kafka_bootstrap: str, mongo_url: str, signing_key: str, mint: Any, tmp_path: Path
) -> None:
    await ensure_platform_topics(kafka_bootstrap)
    run = uuid7().replace("-", "")[-12:]
    app_id = f"itsm-sla-test-{run}"
    service = f"svc-{run}"
    env = {
        **os.environ,
        "ITSM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "ITSM_SLA_APP_ID": app_id,
        "ITSM_SLA_AUTO_OFFSET_RESET": "latest",
        "ITSM_SLA_TOPIC_PARTITIONS": str(await partition_count(kafka_bootstrap, Topic.INCIDENTS)),
        "ITSM_LOG_JSON": "false",
    }
    settings = ServiceSettings(
        service_name="sla-policies-test", auth_mode="dev", dev_signing_key=SecretStr(signing_key),
        mongo_url=mongo_url, mongo_database=f"t_{run}", kafka_bootstrap=kafka_bootstrap,
        relay_poll_interval=0.5,
    )  # fmt: skip
    app = service_app(title="SLA policies", settings=settings, routers=[router], build=build)
    admin = {"Authorization": f"Bearer {mint('ada', 'admin')}"}
    log = tmp_path / "worker.log"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        async with (
            tail(kafka_bootstrap, Topic.SLA) as sla,
            worker(env, log) as proc,
            http_server(app) as api,
        ):
            incidents = Incidents(producer)
            await wait_until_ready(sla, incidents, proc, run, log)
            pid = proc.pid

            calendar = {"id": f"cal-{run}", "name": "Round the clock, Berlin",
                        "time_zone": "Europe/Berlin", "hours": ALL_WEEK}  # fmt: skip
            created = await api.post("/api/v1/sla/calendars", json=calendar, headers=admin)
            assert created.status_code == 201, created.text
            policy = {"id": f"p2-{run}", "name": "P2 incidents of this run", "ticket_type":
                      "incident", "priority": "P2", "service": service,
                      "first_response_seconds": 1234, "resolution_seconds": 5678,
                      "calendar_id": f"cal-{run}"}  # fmt: skip
            created = await api.post("/api/v1/sla/policies", json=policy, headers=admin)
            assert created.status_code == 201, created.text

            async def started_with(version: int, tag: str) -> dict[str, dict[str, Any]]:
                """Incidents created one after the other until one is measured by `version`
                of the policy (the version travels API -> outbox -> Kafka -> worker)."""
                count = 0

                async def next_incident() -> dict[str, dict[str, Any]]:
                    nonlocal count
                    count += 1
                    ticket = f"INC-{run}-{tag}-{count}"
                    now = datetime.now(UTC)
                    rec = record(
                        incident_created(ticket, now, priority="P2", service=service), 1, now
                    )
                    await producer.send_and_wait(
                        Topic.INCIDENTS, rec.value, key=rec.key, headers=list(rec.headers)
                    )
                    records = await sla.collect(
                        lambda _: len(facts_of(sla, ticket)) >= 2, timeout=10, what=ticket
                    )
                    facts = [decode(r) for r in records if r.key == ticket.encode()]
                    return {f.data["metric"]: f.data for f in facts}

                return await eventually(
                    next_incident,
                    until=lambda s: (
                        (s["resolution"]["policy_id"], s["resolution"]["policy_version"])
                        == (f"p2-{run}", version)
                    ),
                    timeout=30,
                    what=f"an incident measured by version {version}",
                )

            first = await started_with(1, "a")
            assert {m: (f["policy_id"], f["target_seconds"]) for m, f in first.items()} == {
                "first_response": (f"p2-{run}", 1234), "resolution": (f"p2-{run}", 5678),
            }  # fmt: skip
            assert first["resolution"]["calendar"] == f"cal-{run}"

            revised = await api.put(
                f"/api/v1/sla/policies/p2-{run}",
                json={k: v for k, v in policy.items() if k != "id"} | {"resolution_seconds": 4321},
                headers=admin | {"If-Match": created.headers["ETag"]},
            )
            assert revised.status_code == 200, revised.text
            second = await started_with(2, "b")
            assert second["resolution"]["target_seconds"] == 4321
            assert second["first_response"]["target_seconds"] == 1234
            assert proc.returncode is None and proc.pid == pid  # the same worker, never restarted
    finally:
        await producer.stop()
        await delete_topics_of(kafka_bootstrap, app_id)
        client = create_client(mongo_url, app_name="tests")
        await client.drop_database(f"t_{run}")
        await client.close()
