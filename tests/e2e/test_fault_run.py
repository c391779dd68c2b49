"""Faults during load, every service its own process on a private Kafka and FerretDB
(`python -m devtools.stack`).

1,000 incidents are created over HTTP, each with its own Idempotency-Key (the client repeats
what a dead process did not answer), 16 at a time, paced at about 30 a second (FerretDB's
ceiling on this machine is about 80 creates a second with nothing else running). Every tenth
is a P2 whose first-response target is 20 s (`ITSM_SLA_TARGETS`) and which nobody answers, so
its breach falls due during the run; notify pages a webhook receiver in the test for each
breach. A tenth are assigned and resolved, a tenth name a configuration item a completed change
touched.
While the load runs, each service in turn is killed with SIGKILL and started again (incidents,
changes, SLA API, SLA worker, notify), then the broker is stopped and started (it keeps its data
dir). Afterwards, once everything has settled:

- every incident in MongoDB has all its events on the incident topic: `created` first, sequences
  1..version without a gap (a sequence seen twice is the same event, redelivered), the last
  event's status the document's; no event of an unknown incident; every 201 answered is there,
  and exactly 1,000 incidents (a repeated create is the same incident);
- every incident's SLA clocks started, every P2 breached exactly once (one sequence per ticket
  and metric on the SLA topic), no other incident breached, and the receiver got exactly one
  notification (one dedup key) per breach;
- the change touching the configuration item is linked, once, to exactly the incidents on it.

The test owns its broker, so restarting it disturbs no other test (see tests/e2e/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sized
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pymongo import AsyncMongoClient

from devtools.localstack import free_port
from services.notify.channels import verify_signature
from shared.contracts import Topic
from shared.contracts.codec import KafkaRecord, decode
from shared.contracts.envelope import Envelope
from shared.contracts.sla import SlaStarted
from tests.e2e.conftest import stack_for
from tests.support.apps import http_server
from tests.support.incidents import BASE, World
from tests.support.kafka import TopicTail, group_lag, tail
from tests.support.notify import BREACHED, ladder
from tests.support.polling import eventually, while_progressing
from tests.support.stack import PrivateStack
from tests.unit.test_changes_api import Api

pytestmark = [pytest.mark.e2e, pytest.mark.infra, pytest.mark.fault_run, pytest.mark.timeout(900)]
INCIDENTS = 1_000
RATE = 30.0  # creates started per second, at most
CONCURRENCY = 16
FIRST_RESPONSE_P2 = 20.0  # seconds
SECRET = "whsec-e2e-fault-run-0123456789"
# After how many created incidents each fault strikes: (name, what happens)
FAULTS = [
    (120, "incidents", "kill"),
    (260, "changes", "kill"),
    (400, "sla-api", "kill"),
    (540, "sla-worker", "kill"),
    (680, "notify", "kill"),
    (820, "kafka", "restart"),
]
STARTED = SlaStarted.event_type
Auth = Callable[..., dict[str, str]]


@dataclass
class Receiver:
    """The pager's webhook endpoint: checks each signature, counts each delivery (a resend of the
    same notification carries the same X-ITSM-Delivery key)."""

    posts: Counter[str] = field(default_factory=Counter)  # dedup key -> POSTs received
    tickets: dict[str, str] = field(default_factory=dict)  # dedup key -> ticket id
    bad: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/pager")
        async def pager(request: Request) -> Response:
            body = await request.body()
            try:
                verify_signature(SECRET, request.headers, body, datetime.now(UTC))
            except Exception as exc:
                self.bad.append(repr(exc))
                return Response(status_code=401)
            key = request.headers["X-ITSM-Delivery"]
            self.posts[key] += 1
            self.tickets[key] = json.loads(body)["ticket"]["id"]
            return Response(status_code=200)

        return app

    def keys_by_ticket(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for key, ticket in self.tickets.items():
            found[ticket].add(key)
        return found


@dataclass
class Run:
    stack: PrivateStack
    receiver: Receiver
    incidents: World
    changes: Api
    item: str  # the configuration item the completed change touched
    change_id: str


@pytest.fixture(scope="module")
async def run(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    signing_key: str,
    auth: Auth,
) -> AsyncIterator[Run]:
    receiver = Receiver()
    env = {
        "ITSM_DEV_SIGNING_KEY": signing_key,
        "ITSM_SLA_TARGETS": json.dumps({"P2": {"first_response": FIRST_RESPONSE_P2}}),
        # Mail is not used here: a relay address instead of the mail sink process.
        "ITSM_NOTIFY_SMTP_HOST": "127.0.0.1",
        "ITSM_NOTIFY_SMTP_PORT": str(free_port()),
        "ITSM_NOTIFY_SMTP_SECURITY": "plain",
        # One person receives every page: the per-person rate limit would hold most of them.
        "ITSM_NOTIFY_RATE_LIMIT_PER_HOUR": "1000000",
        "ITSM_NOTIFY_RATE_LIMIT_BURST": "100000",
        # The load comes from a handful of tokens at up to 30 creates a second, plus retries: the
        # per-client API limit (tested in tests/security/test_rate_limits.py) is off.
        "ITSM_API_RATE_PER_SECOND": "0",
        "ITSM_NOTIFY_DELIVERY_POLL_SECONDS": "0.5",
        "ITSM_NOTIFY_RETRY_BASE_SECONDS": "0.5",
        "ITSM_NOTIFY_RETRY_CAP_SECONDS": "2",
        "ITSM_NOTIFY_RETRY_MAX_ATTEMPTS": "20",
    }
    tmp: Path = tmp_path_factory.mktemp("faults")
    async with (
        http_server(receiver.app()) as hook,
        stack_for(request, tmp, env) as stack,
        stack.client("incidents") as incidents,
        stack.client("changes") as changes,
        stack.client("notify") as notify,
    ):
        world, api = World(incidents, auth), Api(changes, auth)
        await world.setup_groups()
        boss = auth("boss", "manager")
        policy = ladder("p2-pager", first="pager", channels=("webhook",))
        policy["match"] = {"event_types": [BREACHED], "priorities": ["P2"]}
        policy["levels"] = policy["levels"][:1]
        response = await notify.post("/api/v1/notify/policies", json=policy, headers=boss)
        assert response.status_code == 201, response.text
        person = {"webhook": {"url": f"{hook.base_url}/pager", "secret": SECRET}}
        response = await notify.put("/api/v1/notify/people/pager", json=person, headers=boss)
        assert response.status_code == 200, response.text
        item = f"load-ci-{stack.run_id}"
        change = await completed_change(api, item)
        yield Run(stack, receiver, world, api, item, change["id"])


async def completed_change(api: Api, item: str) -> dict[str, Any]:
    await api.call("POST", "/api/v1/configuration-items", "manager", {"name": item}, 201)
    now = datetime.now(UTC)
    change = await api.create(
        configuration_items=[item],
        planned_start=(now - timedelta(hours=1)).isoformat(),
        planned_end=(now + timedelta(hours=1)).isoformat(),
    )
    for action, persona, body in [
        ("submit", "requester", None),
        ("assessment", "manager", None),
        ("approvals", "manager", {"decision": "approve"}),
        ("start", "implementer", None),
        ("complete", "implementer", {"outcome": "successful"}),
    ]:
        change = await api.act(change, action, persona, body)
    return change


# --------------------------------------------------------------------------------------------
# The load and the faults
# --------------------------------------------------------------------------------------------


@dataclass
class Load:
    """Creates incidents and works some of them, retrying what a dead process did not answer."""

    world: World
    item: str
    tag: str
    created: dict[int, dict[str, Any]] = field(default_factory=dict)  # i -> the 201 body
    retried: Counter[str] = field(default_factory=Counter)
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(
        self, path: str, persona: str, body: dict[str, Any], *, done: int = 0, key: str = ""
    ) -> Any:
        """POST until answered; `done` is a status meaning a retry found the work done; `key`:
        an Idempotency-Key, so that a repeated create is the same incident."""
        headers = self.world.headers(persona) | ({"Idempotency-Key": key} if key else {})
        while True:
            try:
                response = await self.world.client.post(path, json=body, headers=headers)
            except httpx.TransportError as exc:  # killed, restarting: not listening yet
                self.retried[type(exc).__name__] += 1
                await asyncio.sleep(0.25)
                continue
            # A lost race (409 naming the version) is a retry of ours overlapping the attempt
            # that timed out or whose answer was lost but that went through meanwhile: read
            # again and retry, as the answer says.
            lost_race = response.status_code == 409 and "no longer at version" in response.text
            if response.status_code >= 500 or lost_race:
                self.retried["lost race" if lost_race else f"HTTP {response.status_code}"] += 1
                await asyncio.sleep(0.25)
                continue
            if response.status_code in (200, 201) or response.status_code == done:
                return response.json()
            raise AssertionError(f"POST {path}: {response.status_code} {response.text}")

    async def incident(self, i: int) -> None:
        kind = i % 10
        impact, urgency = (2, 1) if kind == 0 else (3, 3)  # P2 (breaches) or P5
        body: dict[str, Any] = {"title": f"fault run {self.tag} #{i}", "impact": impact, "urgency": urgency}  # fmt: skip
        if kind == 2:
            body["configuration_item"] = self.item
        incident = await self.send(BASE, "owner", body, key=f"fault-run-{self.tag}-{i}")
        self.created[i] = incident
        self.progress.set()
        iid = incident["id"]
        if kind == 1:
            assigned = {"group": "service-desk"}
            await self.send(f"{BASE}/{iid}/assignment", "manager", assigned)
            resolution = {"code": "fixed", "notes": "done"}
            await self.send(f"{BASE}/{iid}/resolve", "manager", resolution, done=409)

    async def run(self, count: int) -> float:
        started = time.monotonic()
        slots = asyncio.Semaphore(CONCURRENCY)

        async def paced(i: int) -> None:
            await asyncio.sleep(max(0.0, started + i / RATE - time.monotonic()))
            async with slots:
                await self.incident(i)

        await asyncio.gather(*(paced(i) for i in range(count)))
        return time.monotonic() - started

    async def until_created(self, count: int) -> None:
        while len(self.created) < count:
            self.progress.clear()
            await self.progress.wait()


async def inject_faults(stack: PrivateStack, load: Load) -> list[str]:
    """Each fault at its point of the load; returns what happened, with timings."""
    done = []
    for after, name, fault in FAULTS:
        await load.until_created(after)
        began = time.monotonic()
        if fault == "kill":
            pid = stack.kill(name)
            back = await stack.up(name)
            done.append(
                f"{name}: kill -9 pid {pid} at {after} created, answering {back:.1f}s later"
            )
        else:
            await stack.down(name)
            back = await stack.up(name)
            done.append(f"{name}: restarted at {after} created in {time.monotonic() - began:.1f}s")
    return done


# --------------------------------------------------------------------------------------------
# Reading the outcome
# --------------------------------------------------------------------------------------------


class EventLog:
    """Every event of a topic from its beginning, decoded as it arrives."""

    def __init__(self, topic_tail: TopicTail) -> None:
        self.tail = topic_tail
        self.events: list[Envelope] = []

    async def read(self) -> list[Envelope]:
        await self.tail.collect(lambda records: True, timeout=1)  # one poll
        fresh = self.tail.records[len(self.events) :]
        self.events += [decode(KafkaRecord(r.key, r.value, tuple(r.headers))) for r in fresh]
        return self.events

    async def until_complete(
        self, missing: Callable[[list[Envelope]], Sized], what: str, timeout: float = 180
    ) -> list[Envelope]:
        """Read until `missing(events)` is empty; fail naming what is still missing."""
        began = time.monotonic()
        while missing(await self.read()):
            if time.monotonic() - began > timeout:
                gone = missing(self.events)
                raise AssertionError(f"{what}: after {timeout:.0f}s still missing {gone}")
            await asyncio.sleep(0.5)
        print(f"{what}: {time.monotonic() - began:.1f}s")
        return self.events


@asynccontextmanager
async def event_log(stack: PrivateStack, topic: str) -> AsyncIterator[EventLog]:
    async with tail(stack.kafka_bootstrap, topic, from_beginning=True) as topic_tail:
        yield EventLog(topic_tail)


async def documents(stack: PrivateStack, collection: str, projection: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        stack.mongo_url, directConnection=True
    )
    try:
        return await client[stack.database][collection].find({}, projection).to_list()
    finally:
        await client.close()


async def settled(what: str, probe: Callable[[], Awaitable[Any]], until: Callable[[Any], bool], timeout: float = 180) -> Any:  # fmt: skip
    began = time.monotonic()
    result = await eventually(probe, until=until, timeout=timeout, interval=1.0, what=what)
    print(f"{what}: {time.monotonic() - began:.1f}s")
    return result


def behind(docs: list[dict[str, Any]]) -> Callable[[list[Envelope]], dict[str, str]]:
    """What is missing on the topic: aggregates whose events do not reach their version yet."""
    versions = {doc["_id"]: doc["version"] for doc in docs}

    def missing(events: list[Envelope]) -> dict[str, str]:
        seen: dict[str, int] = defaultdict(int)
        for event in events:
            seen[event.subject] = max(seen[event.subject], event.sequence or 0)
        late = {a: f"{seen[a]} of {v}" for a, v in versions.items() if seen[a] < v}
        return dict(sorted(late.items())[:5]) if late else {}

    return missing


def by_aggregate(events: list[Envelope]) -> dict[str, dict[int, list[Envelope]]]:
    found: dict[str, dict[int, list[Envelope]]] = defaultdict(lambda: defaultdict(list))
    for event in events:
        assert event.subject is not None and event.sequence is not None
        found[event.subject][event.sequence].append(event)
    return found


def of_kind(events: list[Envelope], prefix: str) -> list[Envelope]:
    return [e for e in events if e.type.startswith(prefix)]


def log_problems(docs: list[dict[str, Any]], events: list[Envelope], created_type: str) -> list[str]:  # fmt: skip
    """What disagrees between the aggregates in MongoDB and their events on Kafka."""
    problems = []
    log = by_aggregate(events)
    for doc in docs:
        aggregate = doc["_id"]
        sequences = log.get(aggregate, {})
        if sorted(sequences) != list(range(1, doc["version"] + 1)):
            problems.append(f"{aggregate} version {doc['version']}: sequences {sorted(sequences)}")
            continue
        for sequence, copies in sequences.items():
            if len({e.id for e in copies}) != 1:
                problems.append(f"{aggregate} #{sequence}: different events {[e.type for e in copies]}")  # fmt: skip
        if sequences[1][0].type != created_type:
            problems.append(f"{aggregate}: first event {sequences[1][0].type}")
        last = sequences[doc["version"]][0]
        if "status" in doc and last.data.get("status") != doc["status"]:
            problems.append(f"{aggregate}: status {doc['status']}, last event says {last.data.get('status')}")  # fmt: skip
    unknown = set(log) - {doc["_id"] for doc in docs}
    problems += [f"events of {a}, which is not in MongoDB" for a in sorted(unknown)]
    return problems


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


async def test_nothing_is_lost_or_applied_twice_when_each_process_and_the_broker_restart_under_load(
    run: Run,
) -> None:
    stack, receiver = run.stack, run.receiver
    began = time.monotonic()
    load = Load(run.incidents, run.item, stack.run_id)
    faults = asyncio.create_task(inject_faults(stack, load))
    try:
        load_seconds = await load.run(INCIDENTS)
        timeline = await faults
    finally:
        faults.cancel()
    print(f"\n{INCIDENTS} incidents in {load_seconds:.1f}s, retries {dict(load.retried)}")
    print("\n".join(timeline))
    await stack.command("status")  # every process is up (exit status 0), none died meanwhile

    # MongoDB: every incident (the load is over: their versions are final). Kafka: all events
    # of each, up to its version (the outbox relay may still be removing published entries).
    projection = {"version": 1, "status": 1, "priority": 1, "configuration_item": 1}
    incidents = await documents(stack, "incidents", projection)
    ids = {doc["_id"] for doc in incidents}
    assert {i["id"] for i in load.created.values()} <= ids, "an incident answered 201 is missing"
    assert len(ids) == INCIDENTS, "a create repeated after a fault recorded another incident"
    async with event_log(stack, Topic.INCIDENTS) as log:
        incident_events = await log.until_complete(
            behind(incidents), "every incident's events on Kafka"
        )
    # The topic carries the assignment groups too (itsm.group.saved.v1, keyed by name).
    groups = await documents(stack, "assignment_groups", {"version": 1})
    problems = log_problems(
        incidents, of_kind(incident_events, "itsm.incident."), "itsm.incident.created.v1"
    ) + log_problems(groups, of_kind(incident_events, "itsm.group."), "itsm.group.saved.v1")
    assert not problems, f"{len(problems)} incidents disagree with the event log:\n" + "\n".join(problems[:20])  # fmt: skip

    # SLA: every incident's clocks started; every P2 breached its first response exactly once;
    # nothing else breached.
    p2 = {doc["_id"] for doc in incidents if doc["priority"] == "P2"}
    assert len(p2) == INCIDENTS // 10

    def breaches(events: list[Envelope]) -> dict[tuple[str, str], set[int]]:
        found: dict[tuple[str, str], set[int]] = defaultdict(set)
        for e in events:
            if e.type == BREACHED:
                found[(e.subject, e.data["metric"])].add(e.sequence or 0)
        return found

    def unmeasured(events: list[Envelope]) -> dict[str, list[str]]:
        """Incidents without a started first-response clock and P2s without a breach yet, with
        the SLA facts they have (a few of them)."""
        started = {e.subject for e in events if e.type == STARTED and e.data["metric"] == "first_response"}  # fmt: skip
        missing = (ids - started) | (p2 - {ticket for ticket, _ in breaches(events)})
        facts = defaultdict(list)
        for e in events:
            if e.subject in missing:
                facts[e.subject].append(f"{e.type.split('.')[2]}:{e.data.get('metric')}@{e.time:%H:%M:%S}")  # fmt: skip
        return {t: facts.get(t, []) for t in sorted(missing)[:5]} if missing else {}

    async with event_log(stack, Topic.SLA) as log:
        try:
            sla_events = await log.until_complete(
                unmeasured, "every incident's clocks and every P2's breach on Kafka"
            )
        except AssertionError as exc:  # which side stalled: the consumer or the timers?
            app = stack.env["ITSM_SLA_APP_ID"]
            lag = {t: await group_lag(stack.kafka_bootstrap, app, t) for t in (Topic.INCIDENTS, f"{app}-sla-due")}  # fmt: skip
            raise AssertionError(f"{exc}; the SLA worker group's lag: {lag}") from None
    breached = breaches(sla_events)
    assert set(breached) == {(t, "first_response") for t in p2}
    assert {k: s for k, s in breached.items() if len(s) != 1} == {}, "a breach published twice"

    # Notify: one page per breach, once settled (delivery log final, consumers caught up).
    async def unpaged() -> list[str]:
        return sorted(p2 - set(receiver.keys_by_ticket()))

    async def notify_progress() -> tuple[int, ...]:
        """Pages received and notify's lag on both topics: under load notify works through the
        SLA topic's events slower than the clock, and the wait lasts as long as it moves."""
        group = stack.env["ITSM_NOTIFY_CONSUMER_GROUP"]
        lags = [await group_lag(stack.kafka_bootstrap, f"{group}-{kind}", topic) for kind, topic in (("sla", Topic.SLA), ("incidents", Topic.INCIDENTS))]  # fmt: skip
        return (len(receiver.keys_by_ticket()), *lags)

    began = time.monotonic()
    await while_progressing(unpaged, notify_progress, until=lambda missing: not missing, stall=90, what="a page for every breach")  # fmt: skip
    print(f"a page for every breach: {time.monotonic() - began:.1f}s")
    group = stack.env["ITSM_NOTIFY_CONSUMER_GROUP"]
    await settled(
        "notify caught up with the SLA facts",
        lambda: group_lag(stack.kafka_bootstrap, f"{group}-sla", Topic.SLA), until=lambda lag: lag == 0,
    )  # fmt: skip
    deliveries = await settled(
        "notify's delivery log final",
        lambda: documents(stack, "notify_deliveries", {"status": 1, "ticket_id": 1}),
        until=lambda docs: all(d["status"] == "sent" for d in docs),
    )
    pages = receiver.keys_by_ticket()
    assert receiver.bad == []
    assert set(pages) == p2, "a page for a ticket that did not breach"
    assert {t: keys for t, keys in pages.items() if len(keys) != 1} == {}, "paged twice"
    assert Counter(d["ticket_id"] for d in deliveries) == Counter(dict.fromkeys(p2, 1))
    resent = sum(receiver.posts.values()) - len(receiver.posts)
    print(f"pages: {len(pages)}, resent with the same key: {resent}")

    # Changes: the completed change is linked, once each, to the incidents on its item.
    on_item = {doc["_id"] for doc in incidents if doc.get("configuration_item") == run.item}
    change = await settled(
        "the incidents on the changed item linked",
        lambda: run.changes.call("GET", f"/api/v1/changes/{run.change_id}", "manager"),
        until=lambda c: len(c["suggested_incidents"]) >= len(on_item),
    )
    assert sorted(change["suggested_incidents"]) == sorted(on_item)
    changes = await documents(stack, "changes", {"version": 1, "status": 1})
    async with event_log(stack, Topic.CHANGES) as log:
        change_events = await log.until_complete(behind(changes), "every change event on Kafka")
    problems = log_problems(changes, change_events, "itsm.change.created.v1")
    assert not problems, "the changes disagree with the event log:\n" + "\n".join(problems[:20])
    print(f"checked in {time.monotonic() - began:.0f}s from the start of the load")

    # No secret in any process's log of the whole run: keys, the pager's webhook secret, tokens.
    secrets = {
        "the dev signing key": stack.env["ITSM_DEV_SIGNING_KEY"],
        "the ack-link key": stack.env["ITSM_NOTIFY_ACK_LINK_KEY"],
        "the webhook secret": SECRET,
    }
    assert stack.leaks(secrets) == []
