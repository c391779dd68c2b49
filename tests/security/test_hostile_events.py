"""Hostile records on every topic the platform consumes, on the real broker and FerretDB
(docs/security.md, "Hostile events").

The incidents, changes, notify and SLA read services run with their own wiring (`build`), on the
real Kafka adapter with consumer groups of this run (tests/security/hostile.py); the SLA
processor runs as a Faust worker process. Per topic:

1. valid originals are applied and the state they make settles (documents, relayed events);
2. hostile records go to the same partition: every malformed variant (oversized, not JSON, not a
   CloudEvent, payload breaking its contract, bad sequence, no aggregate id…), an unknown type
   version, the originals again (replays) and stale copies with older sequences (out of order);
3. a valid fence record follows on that partition, and each consumer must apply it.

Then every malformed record is in the dead-letter topic once per consumer group of its topic,
with its reason, the original bytes (or a prefix, marked dlq-truncated, when too big to copy) and
its source position; nothing else was dead-lettered; the documents the originals made are
exactly as they were, and no event about those aggregates was published meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from services.changes.main import ChangesSettings
from services.changes.main import create_app as changes_app
from services.incidents.main import IncidentsSettings
from services.incidents.main import create_app as incidents_app
from services.notify.main import NotifySettings
from services.notify.main import create_app as notify_app
from services.sla.domain.kpis import KpiPartial
from services.sla.main import SlaApiSettings
from services.sla.main import create_app as sla_app
from shared.bus.port import DeadLetterHeaders
from shared.bus.processing import (
    MAX_DEAD_LETTER_BYTES,
    RecordProcessor,
    RetryPolicy,
    SourcePosition,
    fit_dead_letter,
)
from shared.contracts.alerts import AlertCleared, AlertFired
from shared.contracts.changes import ChangeCompleted
from shared.contracts.codec import KafkaRecord, encode
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import IncidentCreated, IncidentResolved
from shared.contracts.sla import SlaBreached, SlaMissed, SlaStarted
from shared.contracts.topics import Topic
from shared.ids import uuid7
from shared.runtime import Runtime, verifier_from
from tests.faust.events import created, record, replied
from tests.integration.conftest import scratch_database
from tests.integration.test_changes_on_real_stack import deployed
from tests.integration.test_sla_api_on_real_stack import kpi_snapshot
from tests.security.hostile import (
    Hostile,
    IsolatedBus,
    Sender,
    Watch,
    caught_up,
    check_letters,
    documents,
    keyless,
    malformed,
    sender,
    settled,
    watch,
    with_data,
    with_headers,
)
from tests.support.apps import asgi_client
from tests.support.kafka import ensure_platform_topics, tail
from tests.support.notify import ladder
from tests.support.sla_workers import (
    SlaWorker,
    decoded,
    facts_of,
    incident_feed,
    partition_count,
    run_id,
    sla_workers,
    until,
    wait_until_answering,
    worker_env,
)
from tests.unit.test_sla_api_handlers import fact

pytestmark = [pytest.mark.infra, pytest.mark.timeout(150)]

SERVICES = ("incidents", "changes", "notify", "sla")
STRUCTURED = (("content-type", b"application/cloudevents+json"),)
# The figures docs/security.md records, per test: hostile records sent, refused by the broker,
# dead letters checked (a record once per consumer group that must dead-letter it).
HOSTILE_SENT: dict[str, int] = {}
REFUSED: dict[str, int] = {}
LETTERS: list[int] = []


@pytest.fixture(scope="module", autouse=True)
def hostile_count() -> Iterator[None]:
    """The figure docs/security.md records (`pytest -s` prints it)."""
    yield
    if HOSTILE_SENT:
        print(
            f"\nhostile records sent: {sum(HOSTILE_SENT.values())} {HOSTILE_SENT}; "
            f"refused by the broker: {sum(REFUSED.values())}; dead letters checked: {sum(LETTERS)}"
        )


@dataclass
class Platform:
    run: str
    bootstrap: str
    bus: IsolatedBus
    databases: dict[str, Any]
    clients: dict[str, httpx.AsyncClient]
    manager: dict[str, str]  # a manager's Authorization header

    def groups(self, *names: str) -> dict[str, str]:
        return {name: self.bus.groups[name] for name in names}

    async def add_policy(self, body: dict[str, Any]) -> None:
        response = await self.clients["notify"].post(
            "/api/v1/notify/policies", json=body, headers=self.manager
        )
        assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
async def platform(signing_key: str, mint: Any) -> AsyncIterator[Platform]:
    """The four services, each on its scratch database, on one isolated Kafka bus."""
    bootstrap = os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    mongo_url = os.environ.get("ITSM_MONGO_URL", "mongodb://127.0.0.1:27017")
    run = uuid7().replace("-", "")[-12:]
    await ensure_platform_topics(bootstrap)
    bus = IsolatedBus(bootstrap, run)
    await bus.start()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(bus.stop)
        common = {
            "mongo_url": mongo_url, "kafka_bootstrap": bootstrap, "auth_mode": "dev",
            "dev_signing_key": SecretStr(signing_key), "relay_poll_interval": 0.2,
            "log_json": False, "mongo_timeout_ms": 3_000,
        }  # fmt: skip
        databases = {
            s: await stack.enter_async_context(scratch_database(mongo_url)) for s in SERVICES
        }
        settings = {
            "incidents": IncidentsSettings(**common, mongo_database=databases["incidents"].name),
            "changes": ChangesSettings(**common, mongo_database=databases["changes"].name),
            "notify": NotifySettings(**common, mongo_database=databases["notify"].name,
                                     ack_link_key=SecretStr("k" * 32)),
            "sla": SlaApiSettings(**common, mongo_database=databases["sla"].name),
        }  # fmt: skip
        factories = {
            "incidents": incidents_app, "changes": changes_app, "notify": notify_app, "sla": sla_app,
        }  # fmt: skip
        clients = {}
        for name, factory in factories.items():
            runtime = Runtime(
                bus=bus, database=databases[name], verifier=verifier_from(settings[name])
            )
            app = factory(settings[name], runtime)  # type: ignore[operator]
            clients[name] = await stack.enter_async_context(asgi_client(app))
        manager = {"Authorization": f"Bearer {mint('boss', 'manager')}"}
        yield Platform(run, bootstrap, bus, databases, clients, manager)


def envelope(kind: Any, subject: str, data: Any, *, sequence: int = 0, **extra: Any) -> Envelope:
    return Envelope(
        type=kind.event_type, source="/hostile/tests", subject=subject, sequence=sequence,
        data=data.model_dump(mode="json"), **extra,
    )  # fmt: skip


def fence(kind: str) -> str:
    """The id of a fence record's aggregate: unrelated to the run's ids (the documents that
    must not change are found by those)."""
    return f"fence-{kind}-{uuid7().replace('-', '')[-12:]}"


def kpi_of_team(now: datetime, team: str) -> Envelope:
    """A KPI partial snapshot of `team` (the one of the SLA read API's own test, re-teamed)."""
    snapshot = kpi_snapshot(now.replace(minute=0, second=0, microsecond=0))
    partial = KpiPartial.from_document({**snapshot.data, "team": team})
    return replace(snapshot, subject=partial.key, data={**snapshot.data, "team": team})


def stale(original: KafkaRecord) -> KafkaRecord:
    """The same event under a new id: a copy that is not a redelivery."""
    return with_headers(original, ce_id=uuid7().encode())


async def assert_untouched(
    platform: Platform,
    letters_watch: Watch,
    sent: Sender,
    before: dict[str, dict[str, Any]],
    needles: list[str],
    groups: dict[str, str],
    output_topics: list[str],
) -> None:
    records = await letters_watch.drain()
    assert not check_letters(letters_watch.letters(), sent.hostile, groups)
    LETTERS.append(sum(len(s.hostile.reasons) for s in sent.hostile))
    after = {s: await documents(db, needles) for s, db in platform.databases.items()}
    changed = sorted(
        f"{service}.{name}/{doc_id}"
        for service in before
        for name in {*before[service], *after[service]}
        for doc_id in {*before[service].get(name, {}), *after[service].get(name, {})}
        if before[service].get(name, {}).get(doc_id) != after[service].get(name, {}).get(doc_id)
    )
    assert not changed, f"documents changed by hostile records: {changed}"
    keys = {k.encode() for docs in before.values() for coll in docs.values() for k in coll}
    keys |= {n.encode() for n in needles}
    published = [r for r in records if r.topic in output_topics and r.key in keys]
    assert not published, f"events published about the originals: {published}"


async def test_ingest_topic(platform: Platform) -> None:
    """Monitoring alerts (incidents) and CDEvents (changes) on the ingest topic."""
    run, now = platform.run, datetime.now(UTC).replace(microsecond=0)
    fingerprint, service = f"fp-{run}", f"svc-{run}"
    alert = AlertFired(fingerprint=fingerprint, alertname="DiskFull", starts_at=now - timedelta(minutes=5),
                       severity="critical", summary=f"disk full on {service}", service=service)  # fmt: skip
    fired = encode(envelope(AlertFired, fingerprint, alert))
    cleared = encode(
        envelope(AlertCleared, fingerprint, AlertCleared(**alert.model_dump(), ends_at=now))
    )
    deploy = encode(replace(deployed(run, service), time=now - timedelta(minutes=1)))
    groups = platform.groups("incidents-alert-intake", "changes-cicd-intake")
    incidents, changes = platform.databases["incidents"], platform.databases["changes"]

    async with sender(platform.bootstrap) as send:
        partition = await send.send(Topic.INGEST, fired)
        for rec in (cleared, deploy):
            await send.send(Topic.INGEST, rec, partition)
        resolved = await settled(
            incidents, [fingerprint],
            lambda f: any(d["status"] == "resolved" for d in f.get("incidents", {}).values()),
            what="the alert's incident, resolved",
        )  # fmt: skip
        await settled(
            changes, [service], lambda f: f.get("changes"), what="the deployment's change"
        )
        [(incident_id, incident)] = resolved["incidents"].items()
        await settled(  # notify follows the incident's events
            platform.databases["notify"], [incident_id],
            lambda f: any(v["last_sequence"] == incident["version"]
                          for v in f.get("notify_ticket_views", {}).values()),
            what="notify's view of the incident",
        )  # fmt: skip
        needles = [fingerprint, service, incident_id]
        before = {s: await documents(db, needles) for s, db in platform.databases.items()}

        async with watch(
            platform.bootstrap, [Topic.DEAD_LETTER, Topic.INCIDENTS, Topic.CHANGES]
        ) as seen:
            both = list(groups)
            hostile = [
                *malformed(fired, both, bounded="summary", unknown_type="itsm.alert.fired.v99"),
                Hostile("CDEvent without its subject", with_data(deploy, subject={"id": service}),
                        {"changes-cicd-intake": "not a CDEvents service event"}),
                Hostile("replayed firing", fired, {}),
                Hostile("replayed clearing", cleared, {}),
                Hostile("replayed deployment", deploy, {}),
                Hostile("stale firing after its clearing (new id)", stale(fired), {}),
            ]  # fmt: skip
            for item in hostile:
                await send.send_hostile(Topic.INGEST, item, partition)
            fence_fp, fence_service = fence("fp"), fence("svc")
            fence_alert = alert.model_copy(
                update={"fingerprint": fence_fp, "service": fence_service, "summary": "fence"}
            )
            await send.send(
                Topic.INGEST, encode(envelope(AlertFired, fence_fp, fence_alert)), partition
            )
            fence_deploy = encode(replace(deployed(fence("deploy"), fence_service), time=now))
            await send.send(Topic.INGEST, fence_deploy, partition)
            await settled(incidents, [fence_fp], bool, what="the fence alert's incident")
            await settled(changes, [fence_service], bool, what="the fence deployment's change")
            await caught_up(platform.bootstrap, groups, Topic.INGEST)
            await assert_untouched(platform, seen, send, before, needles, groups,
                                   [Topic.INCIDENTS, Topic.CHANGES])  # fmt: skip
    HOSTILE_SENT["ingest"] = len(send.hostile)


async def test_incident_topic(platform: Platform) -> None:
    """Incident events, read by the incidents cascade, the changes correlation and notify."""
    run, now = platform.run, datetime.now(UTC).replace(microsecond=0)
    ticket, service = f"inc-{run}", f"corr-svc-{run}"
    await platform.add_policy(ladder(
        f"hostile-{run}", first="nobody", channels=("webhook",),
        event_types=(IncidentCreated.event_type,),
    ))  # fmt: skip
    groups = platform.groups(
        "incidents-cascade", "changes-incident-correlation", "notify-incidents"
    )
    notify, changes = platform.databases["notify"], platform.databases["changes"]

    async with sender(platform.bootstrap) as send:
        await send.send(
            Topic.INGEST,
            encode(replace(deployed(f"{run}-c", service), time=now - timedelta(minutes=2))),
        )
        await settled(changes, [service], bool, what="the change to correlate with")
        opened = record(created(ticket, now, service=service), 1, now)
        resolution = encode(envelope(IncidentResolved, ticket, IncidentResolved(
            incident_id=ticket, actor="ann", status="resolved", resolution_code="fixed",
            resolution_notes="done", resolved_at=now, first_contact_resolution=False,
            group=None, tier=None), sequence=2))  # fmt: skip
        partition = await send.send(Topic.INCIDENTS, opened)
        await send.send(Topic.INCIDENTS, resolution, partition)

        def ended(found: dict) -> bool:
            books = found.get("notify_escalations", {}).values()
            views = found.get("notify_ticket_views", {}).values()
            return (
                bool(books)
                and bool(views)
                and all(e["ended_at"] for book in books for e in book["escalations"])
            )

        await settled(notify, [ticket], ended, what="notify's escalation, started and settled")
        await settled(changes, [ticket], bool, what="the change linked to the incident")
        needles = [ticket, service]
        before = {s: await documents(db, needles) for s, db in platform.databases.items()}

        async with watch(
            platform.bootstrap, [Topic.DEAD_LETTER, Topic.CHANGES, Topic.NOTIFY]
        ) as seen:
            hostile = [
                *malformed(
                    opened, groups, bounded="title", unknown_type="itsm.incident.resolved.v99"
                ),
                Hostile("replayed creation", opened, {}),
                Hostile("replayed resolution", resolution, {}),
                Hostile(
                    "stale creation after the resolution (sequence 1, new id)", stale(opened), {}
                ),
            ]
            for item in hostile:
                await send.send_hostile(Topic.INCIDENTS, item, partition)
            fenced = fence("inc")
            await send.send(Topic.INCIDENTS, record(created(fenced, now), 1, now), partition)
            await settled(
                notify, [fenced], lambda f: f.get("notify_ticket_views"), what="the fence's view"
            )
            await caught_up(platform.bootstrap, groups, Topic.INCIDENTS)
            await assert_untouched(platform, seen, send, before, needles, groups,
                                   [Topic.CHANGES, Topic.NOTIFY])  # fmt: skip
    HOSTILE_SENT["incidents"] = len(send.hostile)


async def test_sla_topics(platform: Platform) -> None:
    """SLA facts (notify, the SLA read model) and KPI snapshots (the SLA read model)."""
    run, now = platform.run, datetime.now(UTC).replace(microsecond=0)
    ticket = f"sla-{run}"
    m = timedelta(minutes=1)
    facts = [
        fact(SlaStarted, 1, ticket=ticket, priority="P1", at=now - 30 * m, deadline=now - m, target=1740),
        fact(SlaBreached, 2, ticket=ticket, priority="P1", status="breached", elapsed=1740,
             at=now - m, deadline=now - m, target=1740),
        fact(SlaMissed, 3, ticket=ticket, priority="P1", status="breached", elapsed=1800,
             at=now, deadline=now - m, target=1740),
    ]  # fmt: skip
    started, breached, missed = (encode(f) for f in facts)
    kpi = kpi_of_team(now, f"team-{run}")
    groups = platform.groups("notify-sla", "sla-api-timers")
    kpi_groups = platform.groups("sla-api-kpis")
    notify, sla = platform.databases["notify"], platform.databases["sla"]
    await platform.add_policy(ladder(f"hostile-sla-{run}", first="nobody", channels=("webhook",)))

    async with sender(platform.bootstrap) as send:
        partition = await send.send(Topic.SLA, started)
        for rec in (breached, missed):
            await send.send(Topic.SLA, rec, partition)
        kpi_record = encode(kpi)
        kpi_partition = await send.send(Topic.SLA_KPIS, kpi_record)

        def ended(found: dict) -> bool:
            books = found.get("notify_escalations", {}).values()
            return bool(books) and all(e["ended_at"] for b in books for e in b["escalations"])

        await settled(notify, [ticket], ended, what="the breach's escalation, settled")
        await settled(sla, [ticket], lambda f: any(
            d["last_fact"] == "missed" for d in f.get("sla_timers", {}).values()
        ), what="the timer, missed")  # fmt: skip
        await settled(sla, [f"team-{run}"], bool, what="the KPI partial")
        needles = [ticket, f"team-{run}"]
        before = {s: await documents(db, needles) for s, db in platform.databases.items()}

        async with watch(platform.bootstrap, [Topic.DEAD_LETTER, Topic.NOTIFY]) as seen:
            hostile = [
                *malformed(
                    breached, groups, bounded="metric", unknown_type="itsm.sla.breached.v99"
                ),
                Hostile("replayed start", started, {}),
                Hostile("replayed breach", breached, {}),
                Hostile("stale breach after the outcome (sequence 2, new id)", stale(breached), {}),
            ]
            for item in hostile:
                await send.send_hostile(Topic.SLA, item, partition)
            kpi_hostile = [
                *malformed(kpi_record, kpi_groups, bounded="granularity",
                           unknown_type="itsm.sla.kpi_updated.v99", compacted=True),
                Hostile("replayed KPI snapshot", kpi_record, {}),
                Hostile("stale KPI snapshot (older sequence, other figures)", with_headers(
                    with_data(kpi_record, backlog=99), ce_id=uuid7().encode(),
                    ce_sequence=str(kpi.sequence - 2).encode()), {}),
            ]  # fmt: skip
            for item in kpi_hostile:
                await send.send_hostile(Topic.SLA_KPIS, item, kpi_partition)
            with pytest.raises(KafkaError):  # compacted: the broker takes no record without a key
                await send.send(Topic.SLA_KPIS, keyless(kpi_record), kpi_partition)
            REFUSED["sla"] = 1
            fenced = fence("sla")
            await send.send(
                Topic.SLA, encode(fact(SlaStarted, 1, ticket=fenced, at=now)), partition
            )
            await send.send(Topic.SLA_KPIS, encode(kpi_of_team(now, fence("team"))), kpi_partition)
            await settled(sla, [fenced], bool, what="the fence's timer")
            await caught_up(platform.bootstrap, groups, Topic.SLA)
            await caught_up(platform.bootstrap, kpi_groups, Topic.SLA_KPIS)
            await assert_untouched(platform, seen, send, before, needles,
                                   {**groups, **kpi_groups}, [Topic.NOTIFY])  # fmt: skip
    HOSTILE_SENT["sla"] = len(send.hostile)


def completed_change(change_id: str, now: datetime, sequence: int) -> KafkaRecord:
    data = ChangeCompleted(
        change_id=change_id, actor="cicd", status="completed", outcome="successful",
        actual_start=now - timedelta(minutes=5), actual_end=now, review_required=False,
        configuration_items=["db-1"], services=["payments"],
    )  # fmt: skip
    return encode(envelope(ChangeCompleted, change_id, data, sequence=sequence))


async def test_sla_processor_worker(tmp_path: Path) -> None:
    """The SLA processor (a Faust worker process): incident and change events, and its policy
    log, which it reads whole at every start (unreadable versions are logged and skipped there,
    by design: a dead letter would be written again by every worker at every start)."""
    bootstrap = os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    await ensure_platform_topics(bootstrap)
    run = run_id()
    app_id = f"itsm-sla-hostile-{run}"
    partitions = await partition_count(bootstrap, Topic.INCIDENTS)
    env = worker_env(bootstrap, app_id, partitions=partitions, targets={}, data_dir=tmp_path / "d")
    ticket, change = f"SLA-H-{run}", f"chg-{run}"
    now = datetime.now(UTC).replace(microsecond=0)
    groups = {"sla": app_id}

    async with (
        incident_feed(bootstrap) as feed,
        sender(bootstrap) as send,
        tail(bootstrap, Topic.SLA) as sla,
        watch(bootstrap, [Topic.DEAD_LETTER]) as seen,
        sla_workers(bootstrap, app_id) as workers,
    ):
        worker = SlaWorker("w", env, tmp_path / "worker.log")
        workers.append(worker)
        await worker.start()
        await wait_until_answering(sla, feed, workers, f"probe-{run}", partitions)

        opened = record(created(ticket, now), 1, now)
        reply = record(replied(ticket), 2, now + timedelta(minutes=1))
        partition = await feed.send(opened)
        await feed.send(reply, partition)
        done = completed_change(change, now, 3)
        change_partition = await send.send(Topic.CHANGES, done)
        await sla.collect(
            lambda _: len(facts_of(sla, ticket)) >= 3,
            what="the ticket's facts (2 started, first response met)",
        )
        await caught_up(bootstrap, groups, Topic.CHANGES)
        facts_before = [(f.type, f.sequence) for f in decoded(facts_of(sla, ticket))]

        incident_hostile = [
            *(
                # an incident event version it does not know waits there for a replay
                replace(h, reasons={"sla": "unknown incident event type"})
                if h.name == "unknown type version"
                else h
                for h in malformed(
                    opened, groups, bounded="title", unknown_type="itsm.incident.created.v99"
                )
            ),
            Hostile("replayed creation", opened, {}),
            Hostile("replayed first response", reply, {}),
            Hostile("stale creation after the reply (sequence 1, new id)", stale(opened), {}),
        ]
        for item in incident_hostile:
            await send.send_hostile(Topic.INCIDENTS, item, partition)
        change_hostile = [
            *malformed(done, groups, bounded="outcome", unknown_type="itsm.change.completed.v99"),
            Hostile("replayed change completion", done, {}),
            Hostile("change completion published twice (new id)", stale(done), {}),
        ]
        for item in change_hostile:
            await send.send_hostile(Topic.CHANGES, item, change_partition)
        policy_keys = [f"hostile-policy-{run}-{i}".encode() for i in range(3)]
        policy_log = [
            KafkaRecord(policy_keys[0], b"\x00\xffnot a policy", ()),
            KafkaRecord(policy_keys[1], b'{"specversion": "1.0"}', STRUCTURED),
            # a policy version type carrying an incident's data
            KafkaRecord(policy_keys[2], opened.value,
                        with_headers(opened, ce_type=b"itsm.sla_policy.published.v1").headers),
        ]  # fmt: skip
        policy_log += [KafkaRecord(key, None, ()) for key in policy_keys]  # type: ignore[arg-type]
        for rec in policy_log:  # tombstones last: compaction removes the keys in the end
            await send.send(Topic.SLA_POLICIES, rec)

        fence_ticket = fence("SLA")
        await feed.create(fence_ticket, now, partition=partition)
        await send.send(Topic.CHANGES, completed_change(fence("chg"), now, 3), change_partition)
        await sla.collect(lambda _: len(facts_of(sla, fence_ticket)) >= 2, what="the fence")
        await caught_up(bootstrap, groups, Topic.INCIDENTS)
        await caught_up(bootstrap, groups, Topic.CHANGES)

        def unreadable() -> list[str]:
            return [e.get("key", "") for e in worker.events("sla.policies.unreadable")]

        await until(lambda: len([k for k in unreadable() if run in k]) >= len(policy_log),
                    timeout=30, what="the policy log's records, skipped", workers=workers)  # fmt: skip
        await seen.drain()
        worker.check_alive()

    assert not check_letters(seen.letters(), send.hostile, groups)
    LETTERS.append(sum(len(s.hostile.reasons) for s in send.hostile))
    after = [(f.type, f.sequence) for f in decoded(facts_of(sla, ticket))]
    assert after == facts_before, "hostile incident records changed the ticket's SLA facts"
    assert [s for _, s in after] == sorted({s for _, s in after})  # each sequence once
    HOSTILE_SENT["faust"] = len(send.hostile) + len(policy_log)


def test_a_dead_letter_too_big_to_copy_is_cut_to_fit() -> None:
    """What the broker accepts (up to 1 MiB) may not fit the producers' request limit once the
    dlq-* headers are added: the copy keeps the first bytes and the original size."""
    small = KafkaRecord(b"k", b"v" * 1000, (("h", b"x"),))
    assert fit_dead_letter(small) is small
    big = KafkaRecord(b"k", b"v" * 1_040_000, (("h", b"x"),))
    cut = fit_dead_letter(big)
    assert len(cut.key) + len(cut.value) + sum(len(k) + len(v) for k, v in cut.headers) <= (
        MAX_DEAD_LETTER_BYTES + 40
    )
    assert big.value.startswith(cut.value) and cut.key == b"k"
    assert dict(cut.headers) == {"h": b"x", DeadLetterHeaders.TRUNCATED: b"1040003"}
    hostile_headers = KafkaRecord(b"k" * 600_000, b"v", (("h", b"x" * 400_000),))
    cut = fit_dead_letter(hostile_headers)
    assert cut.key == b"k" * 1024 and dict(cut.headers) == {DeadLetterHeaders.TRUNCATED: b"1000002"}
    assert fit_dead_letter(KafkaRecord(b"k", None, ())).value is None  # type: ignore[arg-type]


async def test_dead_lettering_retries_until_the_broker_takes_the_letter() -> None:
    """A failed dead-letter publication used to end the consumer's task (its partitions
    stalled, the group kept them): it is retried, and the record is never dropped."""
    failures = [RuntimeError("broker away"), RuntimeError("still away")]
    published: list[KafkaRecord] = []

    async def publish(topic: str, rec: KafkaRecord) -> None:
        if failures:
            raise failures.pop(0)
        published.append(rec)

    async def handler(_: Envelope) -> None:
        raise AssertionError("an undecodable record reaches no handler")

    processor = RecordProcessor("g", handler, publish, RetryPolicy(initial=0.001, maximum=0.002))
    await processor.process(KafkaRecord(b"k", b"junk", ()), SourcePosition("t", 0, 7))
    assert not failures and len(published) == 1
    assert dict(published[0].headers)[DeadLetterHeaders.OFFSET] == b"7"
