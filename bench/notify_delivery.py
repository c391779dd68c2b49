"""Notify delivery benchmark on the real local stack: SLA breaches on Kafka to signed webhooks.

    python -m bench.notify_delivery --tickets 300 --rate 2 --seconds 30   # the defaults

The defaults fit FerretDB 1.24 on 2 cores (under 2 minutes; the service sustains ~7/s there,
so 20/s would measure a queue): see docs/benchmarks.md. One bounded run that stops by itself
after at most `--timeout` per phase, on the run's own topics
(`bench-notify-<run>.sla`, `.incidents`, `.baseline`, deleted at the end) and a scratch database
(dropped at the end, after the service has exited; also on Ctrl-C or SIGTERM):

1. Processes: the notify service (uvicorn, loopback port, its own consumer group, SLA topic
   `bench-notify-<run>.sla`); a webhook receiver (aiohttp, loopback) that only reads the body
   and records the receive time, `X-ITSM-Delivery` and the signature headers (signatures are
   verified afterwards, off the clock); a raw poster (httpx) for the baselines. This process
   configures the service and produces the breach facts.
2. Configuration through the API: person `bench-oncall` with a webhook target, one policy on
   `itsm.sla.breached.v1` with one level (that person, webhook, at once). The per recipient x
   channel rate limit is raised (`ITSM_NOTIFY_RATE_LIMIT_*`) so that one person can take
   every message: the bucket is still consulted per delivery.
3. Warm-up: a few breaches, until delivered (consumer group joined, connections open).
4. Latency (first, while the service's collections are small: FerretDB scans them), subject:
   breaches sent open-loop at `--rate` for `--seconds` (on a clock); latency = receipt at the
   receiver - the breach record's CreateTime (the producer's send time), split at the delivery
   log entry's `created_at` (consumer + escalation start | delivery worker + POST).
   Baseline: the same open loop on the baseline topic, read by a raw aiokafka consumer in the
   poster process that posts each one's webhook (same body shape and size, signed) at once.
5. Throughput, subject: `--tickets` breach facts of distinct tickets produced at once
   (acks=all); deliveries/s = delivered / (last receipt - first send).
   Baseline: the raw poster sends the same bodies (the ones the service delivered), freshly
   signed with the same headers, with httpx at the service's delivery concurrency
   (`ITSM_NOTIFY_DELIVERY_CONCURRENCY`, default 8), to the same receiver. Ratio = subject /
   baseline.
6. Checks: every breach delivered (missing), every dedup key received once (duplicated), each
   ticket one key, every signature valid; the delivery log's statuses in the scratch database.

Exit status 1 if a delivery is missing or duplicated or a signature is invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient

from bench.common import (
    CpuMeter,
    Phases,
    Results,
    aim_mark,
    cancel_on_sigterm,
    listening_pid,
    percentile,
    port_of,
)
from shared.auth.tokens import mint_dev_token

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 6
PERSON, POLICY = "bench-oncall", "bench-breach"
BREACHED = "itsm.sla.breached.v1"
DELIVERY, TIMESTAMP, SIGNATURE = "X-ITSM-Delivery", "X-ITSM-Timestamp", "X-ITSM-Signature"
NOTIFY, RAW, RELAY = "notify", "raw", "relay"  # receiver streams: /hook/<stream>
FINAL = ("sent", "failed", "cancelled", "dropped")

# Received: stream, X-ITSM-Delivery, receive time (time.time()), body, timestamp, signature
Received = tuple[str, str, float, bytes, str, str]


def default_concurrency() -> int:
    """The service's delivery concurrency when not overridden: the baseline uses the same."""
    from services.notify.main import NotifySettings

    value = NotifySettings.model_fields["delivery_concurrency"].default
    return int(value)


# -- breach facts -------------------------------------------------------------------------------


def breach_record(ticket_id: str, at: datetime) -> Any:
    """An `itsm.sla.breached.v1` fact as the SLA processor publishes it (binary mode)."""
    from shared.contracts.codec import encode
    from shared.contracts.envelope import Envelope
    from shared.contracts.sla import SlaBreached

    fact = SlaBreached(
        ticket_id=ticket_id, ticket_type="incident", metric="resolution", priority="P2",
        policy_id="standard", policy_version=1, policy_name="Standard", calendar="24x7",
        status="breached", target_seconds=3600, elapsed_seconds=3600, deadline=at,
        occurred_at=at,
    )  # fmt: skip
    envelope = Envelope(
        type=BREACHED, source="/itsm/sla", subject=ticket_id, sequence=1,
        data=fact.model_dump(mode="json"), time=at,
    )  # fmt: skip
    return encode(envelope)


@dataclass
class Sent:
    create_ms: dict[str, int]  # ticket -> record timestamp (CreateTime: the producer's send time)
    first_send: float  # time.time()
    elapsed: float  # first send to last acknowledgement
    send_delay_max: float  # how late the open loop fired its latest record
    timestamp_type: int


async def publish(
    producer: AIOKafkaProducer, topic: str, tickets: Sequence[str], rate: float | None = None
) -> Sent:
    """Produce one breach per ticket, at once (`rate` None) or on a clock at `rate` per second."""
    pending: list[tuple[str, asyncio.Future[Any]]] = []
    late = 0.0
    first_send = time.time()
    started = time.perf_counter()
    for i, ticket in enumerate(tickets):
        if rate:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
        record = breach_record(ticket, datetime.now(UTC))
        future = await producer.send(
            topic, record.value, key=record.key, headers=list(record.headers)
        )
        pending.append((ticket, future))
    metadata = await asyncio.gather(*(future for _, future in pending))
    return Sent(
        {ticket: meta.timestamp for (ticket, _), meta in zip(pending, metadata, strict=True)},
        first_send,
        time.perf_counter() - started,
        late,
        metadata[0].timestamp_type if metadata else 0,
    )


# -- helper processes: the receiver and the raw poster ------------------------------------------


class Helper:
    """A spawned helper process and its command pipe."""

    def __init__(self, target: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=target, args=(child,), daemon=True)
        self.process.start()
        child.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    async def receive(self, within: float) -> Any:
        deadline = time.monotonic() + within
        while not self._conn.poll():
            if time.monotonic() > deadline or not self.process.is_alive():
                raise RuntimeError(f"helper {self.process.pid} did not answer within {within:g}s")
            await asyncio.sleep(0.02)
        kind, payload = self._conn.recv()
        if kind == "error":
            raise RuntimeError(f"helper {self.process.pid}: {payload}")
        return payload

    async def ask(self, command: str, argument: Any = None, within: float = 30) -> Any:
        self._conn.send((command, argument))
        return await self.receive(within)

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self._conn.send(("stop", None))
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)


async def commands(conn: Connection) -> asyncio.Queue[tuple[str, Any]]:
    """The parent's commands, read when the pipe is readable (no polling)."""
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def readable() -> None:
        while conn.poll():
            try:
                queue.put_nowait(conn.recv())
            except EOFError:  # the parent is gone
                asyncio.get_running_loop().remove_reader(conn.fileno())
                queue.put_nowait(("stop", None))
                return

    asyncio.get_running_loop().add_reader(conn.fileno(), readable)
    return queue


def receiver_process(conn: Connection) -> None:
    try:
        asyncio.run(_receiver(conn))
    except Exception as exc:  # reported to the parent, which fails the run
        conn.send(("error", repr(exc)))


async def _receiver(conn: Connection) -> None:
    """Accepts every POST /hook/<stream> with a delivery id: 200, nothing verified on the clock."""
    received: list[Received] = []
    keys: dict[str, set[str]] = {}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        at = time.time()
        delivery = request.headers.get(DELIVERY)
        if not delivery:
            return web.Response(status=400, text=f"missing {DELIVERY}")
        stream = request.match_info["stream"]
        headers = request.headers
        signed = (headers.get(TIMESTAMP, ""), headers.get(SIGNATURE, ""))
        received.append((stream, delivery, at, body, *signed))
        keys.setdefault(stream, set()).add(delivery)
        return web.Response(status=200)

    app = web.Application(client_max_size=2**20)
    app.router.add_post("/hook/{stream}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    queue = await commands(conn)
    conn.send(("ready", port))
    try:
        while True:
            command, argument = await queue.get()
            if command == "count":  # distinct delivery ids received on a stream
                conn.send(("count", len(keys.get(argument, ()))))
            elif command == "collect":
                conn.send(("records", [r for r in received if r[0] == argument]))
            elif command == "stop":
                return
    finally:
        await runner.cleanup()


def raw_process(conn: Connection) -> None:
    try:
        asyncio.run(_raw(conn))
    except Exception as exc:  # reported to the parent, which fails the run
        conn.send(("error", repr(exc)))


def signed_headers(secret: str, body: bytes, delivery: str) -> dict[str, str]:
    """What the service's webhook channel sends: the same signature scheme and headers."""
    from services.notify.channels.webhook import signature_headers

    headers = signature_headers(secret, body, datetime.now(UTC))
    return {"Content-Type": "application/json", DELIVERY: delivery, **headers}


async def _raw(conn: Connection) -> None:
    """The baselines: httpx posts of given bodies at a fixed concurrency ("post"), and a raw
    aiokafka consumer posting one webhook per breach record as it arrives ("relay")."""
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(15, connect=5), follow_redirects=False, trust_env=False
    )
    queue = await commands(conn)
    relay: asyncio.Task[None] | None = None
    relayed = {"posted": 0, "failed": 0}
    first_error: list[str] = []
    conn.send(("ready", os.getpid()))

    async def post(url: str, secret: str, delivery: str, body: bytes) -> None:
        try:
            response = await client.post(
                url, content=body, headers=signed_headers(secret, body, delivery)
            )
            ok = response.status_code == 200
            if not ok:
                first_error.append(f"HTTP {response.status_code}")
        except httpx.HTTPError as exc:
            ok = False
            first_error.append(repr(exc))
        relayed["posted" if ok else "failed"] += 1

    async def post_all(arg: dict[str, Any]) -> dict[str, Any]:
        items: list[tuple[str, bytes]] = list(arg["items"])
        relayed.update(posted=0, failed=0)
        started, begun = time.time(), time.perf_counter()

        async def worker() -> None:
            while items:
                delivery, body = items.pop()
                await post(arg["url"], arg["secret"], delivery, body)

        await asyncio.gather(*(worker() for _ in range(arg["concurrency"])))
        return {**relayed, "started": started, "elapsed": time.perf_counter() - begun}

    async def relay_from(arg: dict[str, Any], ready: asyncio.Future[int]) -> None:
        template = json.loads(arg["template"])
        slots = asyncio.Semaphore(arg["concurrency"])
        consumer = AIOKafkaConsumer(
            bootstrap_servers=arg["bootstrap"], client_id="bench-notify-relay",
            enable_auto_commit=False,
        )  # fmt: skip
        await consumer.start()
        tasks: set[asyncio.Task[None]] = set()

        async def one(ticket: str) -> None:
            delivery = hashlib.sha256(ticket.encode()).hexdigest()  # as long as the dedup key
            payload = {**template, "id": delivery, "ticket": {**template["ticket"], "id": ticket}}
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
            async with slots:
                await post(arg["url"], arg["secret"], delivery, body)

        try:
            partitions = consumer.partitions_for_topic(arg["topic"]) or set()
            for _ in range(40):
                if partitions:
                    break
                await asyncio.sleep(0.25)
                await consumer._client.force_metadata_update()  # as tests/support/kafka.py does
                partitions = consumer.partitions_for_topic(arg["topic"]) or set()
            assignment = [TopicPartition(arg["topic"], p) for p in sorted(partitions)]
            consumer.assign(assignment)
            await consumer.seek_to_end(*assignment)
            for tp in assignment:  # resolve the end offsets now, before any record is sent
                await consumer.position(tp)
            ready.set_result(len(assignment))
            while True:
                batches = await consumer.getmany(timeout_ms=5)
                for batch in batches.values():
                    for record in batch:
                        task = asyncio.create_task(one(record.key.decode()))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
            await consumer.stop()

    try:
        while True:
            command, argument = await queue.get()
            if command == "post":
                conn.send(("posted", await post_all(argument)))
            elif command == "relay":
                relayed.update(posted=0, failed=0)
                ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                relay = asyncio.create_task(relay_from(argument, ready))
                waiting: list[asyncio.Future[Any]] = [relay, ready]
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if relay.done() and not ready.done():
                    relay.result()  # raises what went wrong
                conn.send(("relaying", ready.result()))
            elif command == "relay-stop" and relay is not None:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
                conn.send(("relayed", {**relayed, "first_error": first_error[:1]}))
            elif command == "stop":
                return
    finally:
        await client.aclose()


# -- the service under test ---------------------------------------------------------------------


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    signing_key: str

    def log_lines(self) -> list[str]:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace").splitlines()
        return []


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_service(
    args: argparse.Namespace, *, prefix: str, database: str, extra_env: dict[str, str]
) -> Service:
    port = free_port()
    signing_key = secrets.token_urlsafe(36)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_")}
    env.update(
        ITSM_AUTH_MODE="dev",
        ITSM_DEV_SIGNING_KEY=signing_key,
        ITSM_API_RATE_PER_SECOND="0",  # one token drives the load: the per-client limit is off
        ITSM_MONGO_URL=args.mongo_url,
        ITSM_MONGO_DATABASE=database,
        ITSM_KAFKA_BOOTSTRAP=args.kafka_bootstrap,
        ITSM_TOPIC_PARTITIONS=str(PARTITIONS),
        ITSM_LOG_LEVEL="WARNING",
        ITSM_NOTIFY_CONSUMER_GROUP=prefix,
        ITSM_NOTIFY_SLA_TOPIC=f"{prefix}.sla",
        ITSM_NOTIFY_INCIDENTS_TOPIC=f"{prefix}.incidents",
        ITSM_NOTIFY_ACK_LINK_KEY=secrets.token_urlsafe(48),
        # One recipient takes every message of the run; the bucket is still taken per delivery.
        ITSM_NOTIFY_RATE_LIMIT_PER_HOUR="100000000",
        ITSM_NOTIFY_RATE_LIMIT_BURST="10000000",
    )
    env.update(extra_env)
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the service writes it until it stops
        prefix="bench-notify-", suffix=".log", delete=False
    )
    cmd = [
        sys.executable, "-m", "uvicorn", "services.notify.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return Service(process, f"http://127.0.0.1:{port}", Path(log.name), signing_key)


async def wait_ready(service: Service, within: float) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=service.base_url, trust_env=False) as client:
        while True:
            if service.process.poll() is not None:
                tail = "\n".join(service.log_lines()[-30:])
                raise RuntimeError(f"the service exited early:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"/readyz not 200 after {within:g}s")
            await asyncio.sleep(0.2)


def stop_service(service: Service) -> None:
    """SIGTERM (graceful: the lifespan stops consumers, worker and relay) and wait for the exit,
    so that nothing is still using the scratch database when it is dropped."""
    if service.process.poll() is None:
        began = time.perf_counter()
        service.process.terminate()
        try:
            service.process.wait(timeout=30)
            how = f"exit status {service.process.returncode}"  # -15: uvicorn re-raises SIGTERM
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait(timeout=10)
            how = "killed after 30 s"
        print(f"service stopped: {how} in {time.perf_counter() - began:.1f}s", flush=True)


async def configure(service: Service, hook_url: str, secret: str) -> None:
    token = mint_dev_token(
        service.signing_key, subject="bench-manager", roles=["manager"], issuer="itsm-dev",
        audience="itsm",
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    policy = {
        "id": POLICY,
        "name": "Benchmark breach",
        "match": {"event_types": [BREACHED]},
        "levels": [
            {"delay_seconds": 0, "targets": [{"kind": "user", "name": PERSON}],
             "channels": ["webhook"]},
        ],
    }  # fmt: skip
    person = {"webhook": {"url": hook_url, "secret": secret}}
    async with httpx.AsyncClient(base_url=service.base_url, headers=headers) as client:
        answer = await client.put(f"/api/v1/notify/people/{PERSON}", json=person)
        if answer.status_code != 200:
            raise RuntimeError(f"PUT person: {answer.status_code} {answer.text}")
        answer = await client.post("/api/v1/notify/policies", json=policy)
        if answer.status_code != 201:
            raise RuntimeError(f"POST policy: {answer.status_code} {answer.text}")


# -- the run ------------------------------------------------------------------------------------


async def delivered(receiver: Helper, stream: str, count: int, within: float) -> int:
    """Wait until `count` distinct deliveries reached the stream (or `within` passed)."""
    deadline = time.monotonic() + within
    while True:
        seen: int = await receiver.ask("count", stream)
        if seen >= count or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.05)


def log_event(line: str) -> str:
    """A service log line's event name (structlog JSON), or the line's start."""
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(line)["event"])
    return line[:80]


def ticket_of(body: bytes) -> str:
    return str(json.loads(body)["ticket"]["id"])


@dataclass
class Check:
    """The deliveries of one phase's tickets: first receipt per ticket, and what went wrong."""

    first: dict[str, Received]
    missing: int
    duplicated: int  # dedup keys received more than once
    keys_per_ticket_over_one: int
    bad_signatures: int
    body_bytes: float


def check(records: list[Received], tickets: Sequence[str], secret: str) -> Check:
    from services.notify.channels.webhook import SignatureRejected, verify_signature

    wanted = set(tickets)
    mine = [r for r in records if ticket_of(r[3]) in wanted]
    first: dict[str, Received] = {}
    keys: dict[str, set[str]] = {}
    bad = 0
    for record in mine:
        ticket = ticket_of(record[3])
        first.setdefault(ticket, record)
        keys.setdefault(ticket, set()).add(record[1])
        try:
            headers = {TIMESTAMP: record[4], SIGNATURE: record[5]}
            verify_signature(secret, headers, record[3], datetime.fromtimestamp(record[2], UTC))
        except SignatureRejected:
            bad += 1
    counts = Counter(r[1] for r in mine)
    sizes = [len(r[3]) for r in mine]
    return Check(
        first,
        missing=len(wanted - first.keys()),
        duplicated=sum(1 for n in counts.values() if n > 1),
        keys_per_ticket_over_one=sum(1 for k in keys.values() if len(k) > 1),
        bad_signatures=bad,
        body_bytes=sum(sizes) / len(sizes) if sizes else float("nan"),
    )


def delivery_rate(found: Check, since: float) -> float:
    """Deliveries per second from `since` (the first send) to the last receipt."""
    if not found.first:
        return float("nan")
    return len(found.first) / (max(r[2] for r in found.first.values()) - since)


def latencies_ms(found: Check, sent: Sent) -> list[float]:
    return [(r[2] * 1000 - sent.create_ms[t]) for t, r in found.first.items()]


async def create_topics(bootstrap: str, names: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-notify")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-notify")
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


async def drop_database(mongo: AsyncMongoClient[Any], name: str) -> None:
    """Drop the scratch database (the service has exited), again if it reappears."""
    for _ in range(3):
        await mongo.drop_database(name)
        await asyncio.sleep(0.5)
        if name not in await mongo.list_database_names():
            return
    print(f"warning: could not drop the scratch database {name}", flush=True)


async def log_statuses(mongo: AsyncMongoClient[Any], database: str) -> dict[str, int]:
    deliveries = mongo[database]["notify_deliveries"]
    statuses = ("pending", "retrying", *FINAL)
    counts = {s: await deliveries.count_documents({"status": s}) for s in statuses}
    return {s: n for s, n in counts.items() if n}


async def logged_at(mongo: AsyncMongoClient[Any], database: str, found: Check) -> dict[str, float]:
    """Per delivered ticket: when its notification was logged (the delivery log's created_at,
    after the consumer started the escalation), as time.time()."""
    cursor = mongo[database]["notify_deliveries"].find(
        {"ticket_id": {"$in": list(found.first)}}, {"ticket_id": 1, "created_at": 1}
    )
    return {d["ticket_id"]: d["created_at"].replace(tzinfo=UTC).timestamp() async for d in cursor}


def stages_ms(found: Check, sent: Sent, logged: dict[str, float]) -> tuple[list[float], ...]:
    """CreateTime -> logged (consumer, escalation start) and logged -> receipt (the delivery
    worker: due query, claim, lookups, render, POST), per ticket."""
    consume, deliver = [], []
    for ticket, record in found.first.items():
        if ticket in logged:
            consume.append(logged[ticket] * 1000 - sent.create_ms[ticket])
            deliver.append((record[2] - logged[ticket]) * 1000)
    return consume, deliver


async def run(args: argparse.Namespace) -> int:
    cancel_on_sigterm()
    run_id = uuid.uuid4().hex[:10]
    prefix, database = f"bench-notify-{run_id}", f"bench_notify_{run_id}"
    extra = dict(item.split("=", 1) for item in args.service_env)
    concurrency = int(extra.get("ITSM_NOTIFY_DELIVERY_CONCURRENCY", default_concurrency()))
    secret = secrets.token_urlsafe(32)
    print(f"run {run_id}: topics {prefix}.*, scratch database {database}", flush=True)
    opened_count = round(args.rate * args.seconds)
    tickets = {
        phase: [f"{prefix}-{phase}-{i:06d}" for i in range(n)]
        for phase, n in (("w", args.warmup), ("l", opened_count), ("bw", args.warmup),
                         ("b", opened_count), ("t", args.tickets))
    }  # fmt: skip
    n = args.tickets
    await create_topics(args.kafka_bootstrap, [f"{prefix}.{t}" for t in ("sla", "baseline")])
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(args.mongo_url, serverSelectionTimeoutMS=5000)
    receiver, raw = Helper(receiver_process), Helper(raw_process)
    producer = AIOKafkaProducer(bootstrap_servers=args.kafka_bootstrap, acks="all", linger_ms=0)
    service: Service | None = None
    try:
        port = await receiver.receive(within=60)
        await raw.receive(within=60)
        hook = f"http://127.0.0.1:{port}/hook"
        service = start_service(args, prefix=prefix, database=database, extra_env=extra)
        await wait_ready(service, within=90)
        await producer.start()
        meter = CpuMeter()
        for name, pid in (
            ("bench", os.getpid()), ("service", service.process.pid), ("receiver", receiver.pid),
            ("raw", raw.pid), ("db", listening_pid(port_of(args.mongo_url, 27017))),
            ("kafka", listening_pid(port_of(args.kafka_bootstrap, 9092))),
        ):  # fmt: skip
            meter.add(name, pid)
        phases = Phases(meter)
        idle = await phases.idle_probe()
        print(f"idle probe: machine {idle['machine']:.2f} cores", flush=True)
        await configure(service, f"{hook}/{NOTIFY}", secret)
        sla, baseline = f"{prefix}.sla", f"{prefix}.baseline"

        await publish(producer, sla, tickets["w"])
        warm = await delivered(receiver, NOTIFY, len(tickets["w"]), within=90)
        print(f"warm-up: {warm}/{len(tickets['w'])} delivered", flush=True)

        # Latency first, while the service's collections are small (FerretDB scans them).
        print(f"latency: {args.rate:g} breaches/s for {args.seconds:g}s", flush=True)
        phases.start("latency: notify")
        opened = await publish(producer, sla, tickets["l"], args.rate)
        got = await delivered(receiver, NOTIFY, warm + opened_count, within=args.timeout)
        phases.stop("latency: notify")
        late = check(await receiver.ask("collect", NOTIFY), tickets["l"], secret)
        if not late.first:
            raise RuntimeError("the service delivered nothing: see its log")
        template = next(iter(late.first.values()))[3].decode()
        print("latency baseline: raw consumer + httpx", flush=True)
        await raw.ask(
            "relay",
            {"bootstrap": args.kafka_bootstrap, "topic": baseline, "url": f"{hook}/{RELAY}",
             "secret": secret, "template": template, "concurrency": concurrency},
        )  # fmt: skip
        await publish(producer, baseline, tickets["bw"])  # its warm-up, as the service had
        relay_warm = await delivered(receiver, RELAY, len(tickets["bw"]), within=60)
        phases.start("latency: raw consumer")
        opened_base = await publish(producer, baseline, tickets["b"], args.rate)
        await delivered(receiver, RELAY, relay_warm + opened_count, within=60)
        phases.stop("latency: raw consumer")
        relayed = await raw.ask("relay-stop")
        late_base = check(await receiver.ask("collect", RELAY), tickets["b"], secret)

        print(f"throughput: {n} breaches at once", flush=True)
        phases.start("throughput: notify")
        burst = await publish(producer, sla, tickets["t"])
        got = await delivered(receiver, NOTIFY, got + n, within=args.timeout)
        phases.stop("throughput: notify")
        subject = check(await receiver.ask("collect", NOTIFY), tickets["t"], secret)
        print(f"throughput: {len(subject.first)}/{n} delivered", flush=True)
        print(f"throughput baseline: the same {len(subject.first)} bodies, raw httpx", flush=True)
        phases.start("throughput: raw httpx")
        items = [(r[1], r[3]) for r in subject.first.values()]
        spec = {"url": f"{hook}/{RAW}", "secret": secret, "items": items}
        posted = await raw.ask("post", {**spec, "concurrency": concurrency}, within=300)
        phases.stop("throughput: raw httpx")
        base = check(await receiver.ask("collect", RAW), list(subject.first), secret)

        # A late duplicate (a redelivery after a lost answer) would come after the counts.
        await asyncio.sleep(args.duplicate_grace)
        records = await receiver.ask("collect", NOTIFY)
        subject, late = check(records, tickets["t"], secret), check(records, tickets["l"], secret)
        consume_ms, deliver_ms = stages_ms(late, opened, await logged_at(mongo, database, late))
        burst_logged = await logged_at(mongo, database, subject)
        statuses = await log_statuses(mongo, database)
    finally:
        await producer.stop()
        if service is not None:
            stop_service(service)  # waits for the exit: FerretDB must not drop a database in use
            if sys.exc_info()[0] is not None:
                print(f"service log kept: {service.log_path}", flush=True)
        receiver.close()
        raw.close()
        try:
            await drop_database(mongo, database)
        finally:
            await mongo.close()
            await delete_topics(args.kafka_bootstrap, prefix)

    # -- report
    results = Results()
    sub_ms, base_ms = latencies_ms(late, opened), latencies_ms(late_base, opened_base)
    label = f"latency, {args.rate:g}/s for {args.seconds:g}s: CreateTime -> receipt"
    for q, name in ((50, "p50"), (99, "p99"), (100, "max")):
        results.add(f"{label} {name}", percentile(sub_ms, q), percentile(base_ms, q), "ms")
    for name, values in (("CreateTime -> logged", consume_ms), ("logged -> receipt", deliver_ms)):
        results.add(f"latency stage {name} p50", percentile(values, 50), None, "ms")
        results.add(f"latency stage {name} p99", percentile(values, 99), None, "ms")
    results.add(
        "latency: open-loop send rate achieved", opened_count / opened.elapsed,
        opened_count / opened_base.elapsed, "/s",
    )  # fmt: skip
    results.add(
        f"throughput: deliveries/s, {n} breaches at once (baseline raw httpx, C={concurrency})",
        delivery_rate(subject, burst.first_send), delivery_rate(base, posted["started"]), "/s",
    )  # fmt: skip
    spread = sorted(r[2] for r in subject.first.values())
    if spread:
        first_ms = (spread[0] - burst.first_send) * 1000
        results.add("throughput: first send to first delivery", first_ms, None, "ms")
        results.add("throughput: first send to last delivery", spread[-1] - burst.first_send,
                    None, "s")  # fmt: skip
    if burst_logged:
        last_logged = max(burst_logged.values()) - burst.first_send
        results.add("throughput: first send to last notification logged", last_logged, None, "s")
    results.add("webhook body, mean bytes", subject.body_bytes, base.body_bytes, "B")
    problems = 0
    for name, found, expected in (
        ("latency", late, opened_count), ("latency baseline", late_base, opened_count),
        ("throughput", subject, n), ("throughput baseline", base, len(subject.first)),
    ):  # fmt: skip
        wrong = found.missing + found.duplicated + found.keys_per_ticket_over_one
        wrong += found.bad_signatures
        problems += wrong
        results.note(
            f"{name}: expected / missing / duplicated / keys>1 / bad signatures",
            f"{expected} / {found.missing} / {found.duplicated} / "
            f"{found.keys_per_ticket_over_one} / {found.bad_signatures}",
            aim_mark(wrong == 0),
        )
    results.note(
        "baseline posts failed (throughput / latency)", f"{posted['failed']} / {relayed['failed']}"
    )
    print()
    print(results.table())
    print()
    print(phases.table())
    print()
    kind = "CreateTime" if opened.timestamp_type == 0 else "LogAppendTime"
    print(
        f"latency = receipt at the receiver (its wall clock) - record timestamp ({kind}); "
        f"logged = the delivery log entry's created_at; max open-loop send delay "
        f"{max(opened.send_delay_max, opened_base.send_delay_max) * 1000:.1f} ms"
    )
    print(f"delivery log in the scratch database at the end: {statuses}")
    print(f"service env extras: {extra or 'none'}; delivery concurrency {concurrency}")
    width = max(1, math.ceil((spread[-1] - burst.first_send) / 30)) if spread else 1
    windows = Counter(int((t - burst.first_send) // width) for t in spread)
    histogram = " ".join(
        f"{windows.get(w, 0) / width:.3g}" for w in range(max(windows, default=0) + 1)
    )
    print(f"throughput deliveries/s in consecutive {width} s windows: {histogram}")
    lines = service.log_lines() if service else []
    events = Counter(log_event(line) for line in lines)
    print(f"service log (WARNING and above): {len(lines)} lines; {dict(events.most_common(5))}")
    if service:
        service.log_path.unlink(missing_ok=True)
    return 0 if problems == 0 else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.notify_delivery", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tickets", type=int, default=300, help="breaches for the throughput")
    parser.add_argument("--rate", type=float, default=2.0, help="open-loop breaches/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="open-loop duration")
    parser.add_argument("--warmup", type=int, default=10, help="breaches before measuring")
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for a phase's deliveries"
    )
    parser.add_argument(
        "--duplicate-grace", type=float, default=2.0, help="seconds to wait for late duplicates"
    )
    parser.add_argument(
        "--kafka-bootstrap", default=os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--mongo-url", default=os.environ.get("ITSM_MONGO_URL", "mongodb://127.0.0.1:27017")
    )
    parser.add_argument(
        "--service-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment of the service, e.g. ITSM_NOTIFY_DELIVERY_CONCURRENCY=32",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.service_env):
        parser.error("--service-env takes KEY=VALUE")
    if args.tickets < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--tickets, --rate and --seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted; the service was stopped, the database dropped, topics deleted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
