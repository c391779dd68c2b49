"""The harness the SLA processor benchmarks share (`bench/sla_*.py`), and its helper processes.

    python -m bench.sla worker        the SLA worker on a run's own topics (see below)
    python -m bench.sla raw-consumer  the throughput baseline: aiokafka + the same handler
    python -m bench.sla poller        the breach-lag baseline: a MongoDB poller for deadlines

**Own topics.** The processor reads and writes the platform topics (`itsm.incidents.events.v1`,
`itsm.sla.events.v1`, …) by name. A benchmark puts 100,000+ incident events and as many SLA
facts through them; on the shared broker every other consumer of those topics (other sessions'
SLA workers, notify, a worker starting at `earliest`) would read them too. So the benchmarks
run the unchanged processor (`services.sla.processor.worker.main`) in a process where the app
module's topic names point at the run's own topics (`bench-sla-<run>.incidents`, …, created
with the platform's settings) and check, once the app is built, that it consumes and publishes
nothing else. The processor would not need this if the topic names were settings.

Everything else is the production path: Faust, the changelog-backed table, the wake-up timer,
the due topic, acks=all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
# The tree the worker and the helpers run from: this checkout, or e.g. a `git archive` of the
# commit to measure (with bench/ copied in), so that a run measures one fixed version.
SOURCE_ENV = "ITSM_BENCH_SLA_SOURCE"


def source_dir() -> Path:
    return Path(os.environ.get(SOURCE_ENV) or ROOT)


TOPICS_ENV = "ITSM_BENCH_SLA_TOPICS"  # {"INCIDENTS": name, "SLA": name, "DEAD_LETTER": name}
PARTITIONS = 6
SEQUENCE_HEADER = "ce_sequence"
TYPE_HEADER = "ce_type"

# -- a run's names and topics -------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One benchmark run's names: its topics and the Faust app id (consumer group, changelog
    and due topics `<app_id>-…`)."""

    id: str
    partitions: int = PARTITIONS

    @classmethod
    def new(cls, kind: str, partitions: int = PARTITIONS) -> Run:
        return cls(f"{kind}-{uuid.uuid4().hex[:10]}", partitions)

    @property
    def prefix(self) -> str:
        return f"bench-sla-{self.id}"

    @property
    def incidents(self) -> str:
        return f"{self.prefix}.incidents"

    @property
    def sla(self) -> str:
        return f"{self.prefix}.sla"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.deadletter"

    def app_id(self, generation: int = 0) -> str:
        return self.prefix if generation == 0 else f"{self.prefix}-g{generation}"

    def topic_map(self) -> dict[str, str]:
        """Every platform topic (`Topic` member) -> the run's own name for it."""
        from shared.contracts.topics import Topic

        return {
            member.name: f"{self.prefix}.{member.name.lower().replace('_', '')}" for member in Topic
        }


async def create_topics(bootstrap: str, run: Run) -> None:
    """The run's copy of every platform topic, with the platform's settings (a compacted
    policies topic, the dead-letter retention)."""
    from shared.bus.topics import platform_topics
    from shared.contracts.topics import Topic

    specs = {spec.name: spec for spec in platform_topics(run.partitions)}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-sla")
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(name, run.partitions, 1, topic_configs=dict(specs[str(Topic[m])].config))
                for m, name in run.topic_map().items()
            ]
        )
    finally:
        await admin.close()


def remove_data_dirs(run: Run) -> None:
    for data_dir in Path(tempfile.gettempdir()).glob(f"{run.prefix}*-data"):
        shutil.rmtree(data_dir, ignore_errors=True)


async def delete_topics(bootstrap: str, run: Run) -> list[str]:
    """Every topic of the run: its own and the ones its workers created (`<prefix>…`); and the
    workers' data directories."""
    remove_data_dirs(run)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-sla")
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(run.prefix)]
        if mine:
            await admin.delete_topics(mine)
        return sorted(mine)
    finally:
        await admin.close()


# -- incident events ----------------------------------------------------------------------------


def incident_record(
    ticket_id: str, kind: str, sequence: int, at: datetime, *, opened_at: datetime | None = None
) -> Any:
    """One incident event as the incidents service publishes it (CloudEvents, binary mode)."""
    from shared.contracts.codec import encode
    from shared.contracts.envelope import Envelope
    from shared.contracts.incidents import (
        IncidentAssigned,
        IncidentCreated,
        IncidentEvent,
        IncidentReplied,
        IncidentResolved,
    )

    event: IncidentEvent
    if kind == "created":
        event = IncidentCreated(
            incident_id=ticket_id, actor="monitor", status="new", number="INC0000001",
            title="Mail is down", requester="rita", impact=1, urgency=1, priority="P1",
            opened_at=opened_at or at,
        )  # fmt: skip
    elif kind == "assigned":
        event = IncidentAssigned(
            incident_id=ticket_id, actor="disp", status="assigned", group="service-desk",
            tier="L1", assignee="ann", previous_group=None, previous_assignee=None,
            reassignment_count=0,
        )  # fmt: skip
    elif kind == "replied":
        event = IncidentReplied(
            incident_id=ticket_id, actor="ann", status="in_progress", body="On it",
            by_staff=True, first_response=True,
        )  # fmt: skip
    elif kind == "resolved":
        event = IncidentResolved(
            incident_id=ticket_id, actor="ann", status="resolved", resolution_code="fixed",
            resolution_notes="Restarted the mail relay", resolved_at=at,
            first_contact_resolution=True, group="service-desk", tier="L1",
        )  # fmt: skip
    else:
        raise ValueError(f"unknown incident event kind {kind!r}")
    envelope = Envelope(
        type=event.event_type,
        source="/itsm/incidents",
        subject=ticket_id,
        sequence=sequence,
        data=event.model_dump(mode="json"),
        time=at,
    )
    return encode(envelope)


async def produce(bootstrap: str, topic: str, records: Iterable[Any], chunk: int = 5000) -> int:
    """Send records (shared KafkaRecords) with acks=all, pipelined; returns how many."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for record in records:
            pending.append(
                await producer.send(
                    topic, record.value, key=record.key, headers=list(record.headers)
                )
            )
            if len(pending) >= chunk:
                await asyncio.gather(*pending)
                sent += len(pending)
                pending = []
        await asyncio.gather(*pending)
        sent += len(pending)
    finally:
        await producer.stop()
    return sent


# -- the worker process -------------------------------------------------------------------------


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float  # time.time() at spawn

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill9(self) -> float:
        """SIGKILL; returns the wall time it was sent."""
        at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        return at

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)  # Faust's graceful stop: leaves the group
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log_path.unlink(missing_ok=True)


def start_worker(
    bootstrap: str,
    run: Run,
    *,
    generation: int = 0,
    targets: Mapping[str, Mapping[str, float]] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Worker:
    """`python -m bench.sla worker` on the run's topics, log in a temporary file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_")}
    env.update(
        ITSM_KAFKA_BOOTSTRAP=bootstrap,
        ITSM_SLA_APP_ID=run.app_id(generation),
        ITSM_SLA_TOPIC_PARTITIONS=str(run.partitions),
        ITSM_SLA_AUTO_OFFSET_RESET="earliest",
        ITSM_LOG_JSON="false",
        ITSM_LOG_LEVEL="WARNING",
        ITSM_SLA_DATA_DIR=str(Path(tempfile.gettempdir()) / f"{run.app_id(generation)}-data"),
    )
    env[TOPICS_ENV] = json.dumps(run.topic_map())
    if targets:
        env["ITSM_SLA_TARGETS"] = json.dumps(targets)
    env.update(extra_env or {})
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the worker writes it until it stops
        prefix=f"{run.prefix}-worker-", suffix=".log", delete=False
    )
    cmd = [sys.executable, "-m", "bench.sla", "worker"]
    process = subprocess.Popen(cmd, cwd=source_dir(), env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return Worker(process, Path(log.name), time.time())


def run_worker_on_own_topics() -> None:
    """The SLA worker with the app module's topic names replaced by the run's (TOPICS_ENV)."""
    import services.sla.processor.app as sla_app
    import services.sla.processor.worker as sla_worker
    from shared.bus.topics import platform_topics
    from shared.contracts.topics import Topic

    names: dict[str, str] = json.loads(os.environ[TOPICS_ENV])
    platform_name = {names[m]: str(Topic[m]) for m in names if m in Topic.__members__}

    class RenamedTopics:
        """Stands in for the `Topic` enum inside the app module only."""

        def __getattr__(self, member: str) -> str:
            return names.get(member) or str(getattr(Topic, member))

    def renamed_platform_topic(app: Any, name: str, partitions: int) -> Any:
        spec = {s.name: s for s in platform_topics(partitions)}[platform_name.get(name, name)]
        return app.topic(
            name,
            key_serializer="raw",
            value_serializer="raw",
            partitions=spec.partitions,
            internal=True,
            config=dict(spec.config) or None,
        )

    original_create_app = sla_app.create_app

    def checked_create_app(*args: Any, **kwargs: Any) -> Any:
        app: Any = original_create_app(*args, **kwargs)
        used = {t.get_topic_name() for t in app.declared_topics}
        platform = used & {str(t) for t in Topic}
        core = {names["INCIDENTS"], names["SLA"], names["DEAD_LETTER"]}
        if platform or not core <= used:
            raise SystemExit(
                f"bench.sla: the processor still uses platform topics {sorted(platform)} "
                f"(declared: {sorted(used)}); the topic renaming no longer fits services/sla"
            )
        return app

    feed = getattr(sla_app, "PolicyFeed", None)
    # The live policy catalog (if any) reads the run's own policies topic too.
    if feed is not None and "SLA_POLICIES" in names:

        class OwnPolicyFeed(feed):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.setdefault("topic", names["SLA_POLICIES"])
                super().__init__(*args, **kwargs)

        setattr(sla_app, "PolicyFeed", OwnPolicyFeed)  # noqa: B010
    # setattr: the names are the modules' imports, replaced for this process only.
    setattr(sla_app, "Topic", RenamedTopics())  # noqa: B010
    setattr(sla_app, "platform_topic", renamed_platform_topic)  # noqa: B010
    setattr(sla_worker, "create_app", checked_create_app)  # noqa: B010
    sla_worker.main(["worker", "--loglevel=warn"])


# -- the SLA fact tail, in its own process ------------------------------------------------------

Fact = tuple[str, str, float, int, int]  # key, short type, receive time, CreateTime ms, sequence


def short_type(ce_type: bytes) -> str:
    return ce_type.decode().removeprefix("itsm.sla.").removesuffix(".v1")


def _tail_process(conn: Connection, bootstrap: str, topic: str, keep: Sequence[str]) -> None:
    try:
        asyncio.run(_tail(conn, bootstrap, topic, set(keep)))
    except Exception as exc:  # reported to the parent, which fails the run
        conn.send(("error", repr(exc)))


async def _tail(conn: Connection, bootstrap: str, topic: str, keep: set[str]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="bench-sla-tail",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 2**20,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        for _ in range(40):
            if partitions:
                break
            await asyncio.sleep(0.25)
            await consumer._client.force_metadata_update()  # as tests/support/kafka.py does
            partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            conn.send(("error", f"topic {topic} not found"))
            return
        assignment = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assignment)
        await consumer.seek_to_beginning(*assignment)
        conn.send(("ready", len(assignment)))
        counts: dict[str, int] = {}
        kept: list[Fact] = []
        first_at: dict[str, float] = {}
        last_at: dict[str, float] = {}
        while True:
            batches = await consumer.getmany(timeout_ms=20, max_records=5000)
            received = time.time()
            for batch in batches.values():
                for record in batch:
                    headers = dict(record.headers or ())
                    kind = short_type(headers.get(TYPE_HEADER, b"?"))
                    counts[kind] = counts.get(kind, 0) + 1
                    first_at.setdefault(kind, received)
                    last_at[kind] = received
                    if kind in keep:
                        key = (record.key or b"").decode()
                        sequence = int(headers.get(SEQUENCE_HEADER, b"0"))
                        kept.append((key, kind, received, record.timestamp, sequence))
            while conn.poll():
                command = conn.recv()
                if command == "counts":
                    conn.send(("counts", (counts, first_at, last_at)))
                elif command == "facts":
                    conn.send(("facts", kept))
                elif command == "stop":
                    return
    finally:
        await consumer.stop()


class FactTail:
    """Reads the run's SLA topic from its beginning in a child process; counts every fact type
    and keeps (key, type, receive time, CreateTime, sequence) of the types in `keep`."""

    def __init__(self, bootstrap: str, topic: str, keep: Sequence[str] = ()) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=_tail_process, args=(child, bootstrap, topic, list(keep)), daemon=True
        )
        self.process.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    async def _answer(self, within: float = 60.0) -> Any:
        deadline = time.monotonic() + within
        while not self._conn.poll():
            if time.monotonic() > deadline or not self.process.is_alive():
                raise RuntimeError("the SLA fact tail did not answer")
            await asyncio.sleep(0.02)
        kind, payload = self._conn.recv()
        if kind == "error":
            raise RuntimeError(f"SLA fact tail: {payload}")
        return payload

    async def ready(self) -> int:
        partitions: int = await self._answer()
        return partitions

    async def counts(self) -> tuple[dict[str, int], dict[str, float], dict[str, float]]:
        self._conn.send("counts")
        counts, first_at, last_at = await self._answer()
        return counts, first_at, last_at

    async def facts(self) -> list[Fact]:
        self._conn.send("facts")
        facts: list[Fact] = await self._answer(within=120)
        return facts

    async def wait_for(
        self,
        until: Callable[[dict[str, int]], bool],
        *,
        within: float,
        what: str,
        worker: Worker | None = None,
        interval: float = 0.25,
        partial: bool = False,
    ) -> dict[str, int]:
        """Poll the counts until `until` holds; fails with `what` and the worker's log (with
        `partial`, a timeout returns the counts reached instead)."""
        deadline = time.monotonic() + within
        while True:
            counts, _, _ = await self.counts()
            if until(counts):
                return counts
            if worker is not None and not worker.alive():
                raise RuntimeError(
                    f"the worker exited while waiting for {what}:\n{worker.log_tail()}"
                )
            if time.monotonic() > deadline:
                if partial:
                    print(f"warning: no {what} within {within:.0f}s: {counts}", flush=True)
                    return counts
                tail = f"\n{worker.log_tail()}" if worker else ""
                raise RuntimeError(f"no {what} within {within:.0f}s (facts: {counts}){tail}")
            await asyncio.sleep(interval)

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self._conn.send("stop")
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)


async def wait_until_answering(
    bootstrap: str, run: Run, tail: FactTail, worker: Worker, *, within: float = 120.0
) -> float:
    """Seconds from the worker's spawn until it applies a probe ticket (its `started` facts come
    back): it has joined the group, recovered its table and consumes. Probes are P1 tickets
    opened now (deadlines minutes away unless the run's targets say otherwise)."""
    counts, _, _ = await tail.counts()
    before = counts.get("started", 0)
    now = datetime.now(UTC)
    probe = incident_record(f"probe-{run.id}-{worker.pid}", "created", 1, now)
    await produce(bootstrap, run.incidents, [probe])
    await tail.wait_for(
        lambda c: c.get("started", 0) >= before + 2,
        within=within,
        what="answer to a probe ticket",
        worker=worker,
        interval=0.05,
    )
    _, _, last_at = await tail.counts()
    return last_at["started"] - worker.started


# -- the throughput baseline: a raw aiokafka consumer running the same handler ---------------


class NullSink:
    """Drops what the processor publishes (the handler's cost alone)."""

    async def send(self, topic: str, record: Any, partition: int | None = None) -> None:
        return None

    async def send_many(self, topic: str, records: Sequence[tuple[Any, int | None]]) -> None:
        return None


@dataclass
class ProducerSink:
    """Publishes like the Faust sink does: send, then wait for every acknowledgement."""

    producer: AIOKafkaProducer
    rename: dict[str, str] = field(default_factory=dict)

    async def send(self, topic: str, record: Any, partition: int | None = None) -> None:
        await self.send_many(topic, [(record, partition)])

    async def send_many(self, topic: str, records: Sequence[tuple[Any, int | None]]) -> None:
        name = self.rename.get(topic, topic)
        pending = [
            await self.producer.send(name, r.value, key=r.key, headers=list(r.headers), partition=p)
            for r, p in records
        ]
        if pending:
            await asyncio.gather(*pending)


async def raw_consumer(args: argparse.Namespace) -> dict[str, Any]:
    """Consume `args.topic` from the beginning with aiokafka and hand every record to
    `SlaProcessor.on_incident_record` (in-memory dict table); stop after `args.events`."""
    from services.sla.processor.catalog import default_catalog
    from services.sla.processor.handling import SlaProcessor
    from services.sla.processor.settings import SlaSettings
    from services.sla.processor.wakeups import WakeupIndex
    from shared.bus.processing import SourcePosition
    from shared.contracts.codec import KafkaRecord
    from shared.logs import configure_logging
    from shared.telemetry import setup_tracing

    settings = SlaSettings()
    configure_logging("WARNING", json=False)
    setup_tracing(settings.service_name)  # as the worker does: spans are created, not exported
    producer: AIOKafkaProducer | None = None
    sink: Any = NullSink()
    if args.sink == "kafka":
        producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
        await producer.start()
        sink = ProducerSink(producer, {"sla": args.facts_topic, "dlq": args.facts_topic})
    processor = SlaProcessor(
        table={},
        sink=sink,
        catalog=default_catalog(settings.targets),
        index=WakeupIndex(),
        group=f"{args.topic}-raw",
        sla_topic="sla",
        due_topic="due",
        dead_letter_topic="dlq",
        clock=lambda: datetime.now(UTC),
    )
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=f"{args.topic}-raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        max_partition_fetch_bytes=4 * 2**20,
    )
    await consumer.start()
    processed, outcomes = 0, dict[str, int]()
    first = last = 0.0
    cpu_first = 0.0
    try:
        while processed < args.events:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, batch in batches.items():
                for message in batch:
                    record = KafkaRecord(message.key, message.value, tuple(message.headers or ()))
                    position = SourcePosition(tp.topic, tp.partition, message.offset)
                    handled = await processor.on_incident_record(record, position)
                    outcomes[handled.outcome] = outcomes.get(handled.outcome, 0) + 1
                    processed += 1
                    last = time.time()
                    if not first:
                        first, cpu_first = last, time.process_time()
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
    return {
        "processed": processed,
        "first": first,
        "last": last,
        "outcomes": outcomes,
        "cpu_s": time.process_time() - cpu_first,  # from the first record to the end
    }


# -- the breach-lag baseline: a poller of due deadlines in MongoDB -----------------------------


async def poller(args: argparse.Namespace) -> dict[str, Any]:
    """Every `interval` s from `start` (wall clock) until `until`: find the deadlines due and not
    notified, note when each document arrived, then mark them notified (one update_many with the
    same filter). The update runs in the background, so a slow one (FerretDB rewrites every
    document) does not delay the next poll; what a poll finds again before its update is done
    is not emitted twice. Writes {"polls": [...], "found": [[_id, received], ...]} to `out`."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[Any] = AsyncMongoClient(args.mongo, serverSelectionTimeoutMS=5000)
    collection = client[args.database]["deadlines"]
    polls: list[dict[str, float]] = []
    found: dict[str, float] = {}
    update: asyncio.Task[None] | None = None

    async def mark(due: dict[str, Any], poll: dict[str, float]) -> None:
        began = time.time()
        await collection.update_many(due, {"$set": {"notified": True}})
        poll["update_s"] = time.time() - began

    at = args.start
    try:
        while at <= args.until:
            await asyncio.sleep(max(0.0, at - time.time()))
            began = time.time()
            due = {"deadline": {"$lte": datetime.fromtimestamp(began, UTC)}, "notified": False}
            poll = {"at": began, "found": 0, "again": 0, "update_s": float("nan")}
            async for doc in collection.find(due, {"_id": 1}):
                if doc["_id"] in found:
                    poll["again"] += 1
                else:
                    found[doc["_id"]] = time.time()
                    poll["found"] += 1
            poll["query_s"] = time.time() - began
            polls.append(poll)
            if update is None or update.done():
                update = asyncio.create_task(mark(due, poll))
            at += args.interval
        if update is not None:
            await update
    finally:
        await client.close()
    write_json(args.out, {"polls": polls, "found": list(found.items())})
    return {"polls": len(polls)}


def write_json(path: str, value: Any) -> None:
    Path(path).write_text(json.dumps(value))


async def seed_deadlines(
    mongo: Any, database: str, deadlines: Mapping[str, datetime], batch: int = 1000
) -> float:
    """The poller's view: one small document per deadline, with an index on `deadline`.
    Returns the seconds the inserts took."""
    collection = mongo[database]["deadlines"]
    await collection.create_index("deadline")
    started = time.perf_counter()
    docs = [{"_id": key, "deadline": at, "notified": False} for key, at in deadlines.items()]
    for i in range(0, len(docs), batch):
        await collection.insert_many(docs[i : i + batch], ordered=False)
    return time.perf_counter() - started


async def full_result_offsets(mongo: Any, database: str) -> dict[str, float]:
    """One query returning every deadline (what a 300 s poll finds after a 150 s window): the
    seconds from the query's start to each document's arrival."""
    collection = mongo[database]["deadlines"]
    began = time.time()
    now = datetime.fromtimestamp(began, UTC)
    offsets = {}
    async for doc in collection.find({"deadline": {"$lte": now}}, {"_id": 1}):
        offsets[doc["_id"]] = time.time() - began
    return offsets


async def drop_database(mongo: Any, name: str) -> None:
    """Drop the scratch database, again if it reappears (FerretDB still runs queued requests)."""
    for _ in range(5):
        await mongo.drop_database(name)
        await asyncio.sleep(0.5)
        if name not in await mongo.list_database_names():
            return
    print(f"warning: could not drop the scratch database {name}", flush=True)


def spawn_helper(command: str, *argv: str) -> subprocess.Popen[bytes]:
    """`python -m bench.sla <command> …` as a child process, its stdout a pipe (one JSON line)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.sla", command, *argv],
        cwd=source_dir(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def helper_result(process: subprocess.Popen[bytes], within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{process.args!r} did not finish within {within:.0f}s")
        await asyncio.sleep(0.1)
    out, err = process.communicate()
    if process.returncode != 0:
        detail = err.decode(errors="replace")[-3000:]
        raise RuntimeError(f"{process.args!r} failed ({process.returncode}):\n{detail}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def seconds_since(at: datetime) -> float:
    return (datetime.now(UTC) - at) / timedelta(seconds=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sla", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="the SLA worker on the topics named in $" + TOPICS_ENV)
    raw = sub.add_parser("raw-consumer", help="aiokafka consumer + SlaProcessor, one JSON line")
    raw.add_argument("--bootstrap", required=True)
    raw.add_argument("--topic", required=True)
    raw.add_argument("--events", type=int, required=True)
    raw.add_argument("--sink", choices=["null", "kafka"], default="null")
    raw.add_argument("--facts-topic", default="")
    poll = sub.add_parser("poller", help="poll a deadlines collection, results to --out")
    poll.add_argument("--mongo", required=True)
    poll.add_argument("--database", required=True)
    poll.add_argument("--interval", type=float, required=True)
    poll.add_argument("--start", type=float, required=True, help="first poll, Unix time")
    poll.add_argument("--until", type=float, required=True, help="last poll at or before")
    poll.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "worker":
        run_worker_on_own_topics()
        return 0
    result = asyncio.run(raw_consumer(args) if args.command == "raw-consumer" else poller(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
