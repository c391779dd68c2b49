"""Incident API benchmark on the real local stack (Kafka + MongoDB-compatible server).

    python -m bench.incident_api --seconds 10 --concurrency 32 --rate 300

One run, bounded, stopping by itself:

1. starts the incidents service as its own process (uvicorn, loopback port, scratch database);
2. ceiling: GET /livez closed-loop (C connections, D seconds) -> req/s, p50/p99;
3. subject: POST /api/v1/incidents closed-loop, same C and D -> creates/s, p50/p99, ratio;
4. open loop at a fixed rate (sends on a clock, latency from the scheduled time, so a slow
   response cannot hide the requests queued behind it) for /livez and for creates;
5. lag from the 201 to the incident's `itsm.incident.created.v1` record on Kafka, seen by a
   consumer (its own process) assigned to every partition at its end before the load.

The load generator (aiohttp, HTTP/1.1 keep-alive, bounded pool) runs in this process, the
service in another, the Kafka consumer in a third; on a small machine they share the cores with
the broker and the database. The CPU table shows cores used per phase by each of them (`db` is
the whole database process, other users of a shared server included; `others` is the rest of
the machine). `--service-env KEY=VALUE` passes extra settings to the service, e.g.
`ITSM_RELAY_POLL_INTERVAL=60`. The scratch database is dropped at the end, also on Ctrl-C or
SIGTERM. Exit status 1 if a created incident never reached Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import AsyncMongoClient, uri_parser

from bench.common import CpuMeter, aim_mark, fmt, listening_pid, percentile
from shared.auth.tokens import mint_dev_token

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "itsm.incidents.events.v1"
CREATED = "itsm.incident.created.v1"
INCIDENTS = "/api/v1/incidents"
ISSUER, AUDIENCE = "itsm-dev", "itsm"
WARMUP_SECONDS = 1.0
IDLE_PROBE_SECONDS = 2.0

# Aims (value must be at or under, except the throughput ratio: at or over).
AIM_RATIO = 0.25
AIM_OPEN_P99_MS = 50.0
AIM_LAG_P99_MS = 100.0


# ---------------------------------------------------------------------------------------------
# Statistics and CPU accounting


# ---------------------------------------------------------------------------------------------
# The service under test, in its own process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    signing_key: str

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_service(
    *, bootstrap: str, mongo_url: str, database: str, extra_env: dict[str, str]
) -> Service:
    port = free_port()
    signing_key = secrets.token_urlsafe(36)  # 48 characters
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_")}
    env.update(
        ITSM_AUTH_MODE="dev",
        ITSM_DEV_SIGNING_KEY=signing_key,
        ITSM_API_RATE_PER_SECOND="0",  # one token drives the load: the per-client limit is off
        ITSM_MONGO_URL=mongo_url,
        ITSM_MONGO_DATABASE=database,
        ITSM_KAFKA_BOOTSTRAP=bootstrap,
        ITSM_LOG_LEVEL="WARNING",
    )
    env.update(extra_env)
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the service writes it until it stops
        prefix="bench-incidents-", suffix=".log", delete=False
    )
    cmd = [
        sys.executable, "-m", "uvicorn", "services.incidents.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return Service(process, f"http://127.0.0.1:{port}", Path(log.name), signing_key)


async def wait_ready(service: Service, within: float) -> None:
    deadline = time.monotonic() + within
    async with new_client(service.base_url, 1) as client:
        while True:
            if service.process.poll() is not None:
                raise RuntimeError(f"the service exited early:\n{service.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with client.get("/readyz") as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"/readyz not 200 after {within:.0f}s:\n{service.log_tail()}")
            await asyncio.sleep(0.2)


def stop_service(service: Service) -> None:
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)  # uvicorn: graceful, runs the lifespan's stop
        try:
            service.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait(timeout=5)
    with contextlib.suppress(OSError):
        service.log_path.unlink()


# ---------------------------------------------------------------------------------------------
# The Kafka tail, in its own process (so its receive times are not delayed by the load loop)


def _created_key(record: Any) -> str | None:
    if record.key is None:
        return None
    for name, value in record.headers or ():
        if name == "ce_type":
            return record.key.decode() if value == CREATED.encode() else None
    return None


def tail_process(conn: Connection, bootstrap: str, topic: str) -> None:
    """Records every `created` record as (key, receive time, record timestamp ms, timestamp type).

    Commands from the parent: ("expect", ids), ("drain", timeout): answer once every expected
    id was seen or the timeout passed, ("finish", grace): poll `grace` more seconds (to catch
    duplicates), send the records and exit."""
    try:
        asyncio.run(_tail(conn, bootstrap, topic))
    except Exception as exc:
        conn.send(("error", repr(exc)))


async def _tail(conn: Connection, bootstrap: str, topic: str) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, client_id="bench-incident-api-tail", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions: set[int] = set()
        for _ in range(20):  # the service creates the topic at start-up if it is missing
            await consumer._client.force_metadata_update()  # as tests/support/kafka.py does
            partitions = consumer.partitions_for_topic(topic) or set()
            if partitions:
                break
            await asyncio.sleep(0.5)
        if not partitions:
            conn.send(("error", f"topic {topic} not found on {bootstrap}"))
            return
        assignment = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assignment)
        await consumer.seek_to_end(*assignment)
        for tp in assignment:  # resolve the end offsets now, before any load
            await consumer.position(tp)
        conn.send(("ready", len(assignment)))
        records: list[tuple[str, float, int, int]] = []
        seen: set[str] = set()
        missing: set[str] = set()
        drain_until: float | None = None
        finish_at: float | None = None
        while True:
            batches = await consumer.getmany(timeout_ms=10)
            received = time.time()
            for batch in batches.values():
                for record in batch:
                    key = _created_key(record)
                    if key is not None:
                        records.append((key, received, record.timestamp, record.timestamp_type))
                        seen.add(key)
                        missing.discard(key)
            while conn.poll():
                command, argument = conn.recv()
                if command == "expect":
                    missing.update(i for i in argument if i not in seen)
                elif command == "drain":
                    drain_until = time.monotonic() + argument
                elif command == "finish":
                    finish_at = time.monotonic() + argument
            if drain_until is not None and (not missing or time.monotonic() > drain_until):
                conn.send(("drained", len(missing)))
                drain_until = None
            if finish_at is not None and time.monotonic() > finish_at:
                conn.send(("records", records))
                return
    finally:
        await consumer.stop()


class Tail:
    def __init__(self, bootstrap: str, topic: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=tail_process, args=(child, bootstrap, topic), daemon=True
        )
        self.process.start()
        child.close()

    async def receive(self, within: float) -> tuple[str, Any]:
        deadline = time.monotonic() + within
        while not self._conn.poll():
            if time.monotonic() > deadline or not self.process.is_alive():
                raise RuntimeError(f"the Kafka tail did not answer within {within:.0f}s")
            await asyncio.sleep(0.05)
        kind, payload = self._conn.recv()
        if kind == "error":
            raise RuntimeError(f"Kafka tail: {payload}")
        return kind, payload

    def send(self, command: str, argument: Any) -> None:
        self._conn.send((command, argument))

    def close(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# Load


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: int = 0
    elapsed: float = 0.0
    cores: dict[str, float] = field(default_factory=dict)
    send_delay_max: float = 0.0  # open loop: how late the client fired its latest request
    per_second: list[int] = field(default_factory=list)  # closed loop: answers in each second

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000 if self.latencies else float("nan")


class Api:
    def __init__(self, token: str) -> None:
        self.headers = {"Authorization": f"Bearer {token}"}
        self.created: dict[str, tuple[float, str]] = {}  # id -> (wall time of the 201, phase)
        self.first_error: str | None = None
        self._n = 0

    def _failed(self, detail: str) -> bool:
        self.first_error = self.first_error or detail
        return False

    async def livez(self, client: aiohttp.ClientSession, phase: str) -> bool:
        try:
            async with client.get("/livez") as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._failed(f"GET /livez: {exc!r}")
        return response.status == 200 or self._failed(f"GET /livez: {response.status}")

    async def create(self, client: aiohttp.ClientSession, phase: str) -> bool:
        self._n += 1
        body = {
            "title": f"Benchmark incident {self._n}",
            "description": "Recorded by bench.incident_api.",
            "impact": 2,
            "urgency": 2,
            "category": "benchmark",
        }
        try:
            async with client.post(INCIDENTS, json=body, headers=self.headers) as response:
                payload = await response.read()
                received = time.time()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._failed(f"POST {INCIDENTS}: {exc!r}")
        if response.status != 201:
            return self._failed(f"POST {INCIDENTS}: {response.status} {payload[:300]!r}")
        self.created[json.loads(payload)["id"]] = (received, phase)
        return True


Request = Callable[[aiohttp.ClientSession, str], Awaitable[bool]]


def new_client(base_url: str, connections: int) -> aiohttp.ClientSession:
    """HTTP/1.1 with keep-alive and a bounded connection pool (no proxies from the environment:
    loopback only). aiohttp rather than httpx: measured here, httpx.AsyncClient spent 1.2-3.4 ms
    of client CPU per GET /livez (worse with more pooled connections), aiohttp 0.15-0.18 ms,
    and the client shares the machine's cores with the service."""
    return aiohttp.ClientSession(
        base_url,
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
        timeout=aiohttp.ClientTimeout(total=30),
        trust_env=False,
    )


async def closed_loop(
    client: aiohttp.ClientSession, request: Request, name: str, concurrency: int, seconds: float
) -> Phase:
    """`concurrency` workers, each sending its next request when the previous one answered."""
    phase = Phase(name)
    started = time.perf_counter()
    deadline = started + seconds

    phase.per_second = [0] * math.ceil(seconds)

    async def worker() -> None:
        while (sent := time.perf_counter()) < deadline:
            if await request(client, name):
                answered = time.perf_counter()
                phase.latencies.append(answered - sent)
                second = int(answered - started)
                if second < len(phase.per_second):
                    phase.per_second[second] += 1
            else:
                phase.errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.elapsed = time.perf_counter() - started
    return phase


async def open_loop(
    client: aiohttp.ClientSession, request: Request, name: str, rate: float, seconds: float
) -> Phase:
    """Request i is due at start + i/rate and is sent then, whether or not earlier ones have
    answered; its latency counts from the due time (no coordinated omission)."""
    phase = Phase(name)
    count = round(rate * seconds)
    started = time.perf_counter() + 0.05

    async def one(due: float) -> None:
        phase.send_delay_max = max(phase.send_delay_max, time.perf_counter() - due)
        if await request(client, name):
            phase.latencies.append(time.perf_counter() - due)
        else:
            phase.errors += 1

    tasks = []
    for i in range(count):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    phase.elapsed = time.perf_counter() - started
    return phase


async def measured(meter: CpuMeter, run: Awaitable[Phase]) -> Phase:
    before = meter.snapshot()
    phase = await run
    phase.cores = CpuMeter.cores(before, meter.snapshot())
    return phase


# ---------------------------------------------------------------------------------------------
# Report


@dataclass
class Lag:
    name: str
    receive_ms: list[float]
    record_ms: list[float]


def lags(api: Api, records: list[tuple[str, float, int, int]]) -> tuple[list[Lag], int, int, int]:
    """Per phase: first receive time (and record timestamp) minus the 201's time; plus the
    number of created ids never seen, ids seen more than once, and the timestamp type."""
    first: dict[str, tuple[float, int]] = {}
    times_seen: dict[str, int] = {}
    timestamp_type = 0
    for key, received, timestamp_ms, ts_type in records:
        if key in api.created:
            times_seen[key] = times_seen.get(key, 0) + 1
            first.setdefault(key, (received, timestamp_ms))
            timestamp_type = ts_type
    by_phase: dict[str, Lag] = {}
    for key, (answered, phase) in api.created.items():
        lag = by_phase.setdefault(phase, Lag(phase, [], []))
        if key in first:
            received, timestamp_ms = first[key]
            lag.receive_ms.append((received - answered) * 1000)
            lag.record_ms.append(timestamp_ms - answered * 1000)
    missing = len(api.created) - len(first)
    duplicated = sum(1 for n in times_seen.values() if n > 1)
    return list(by_phase.values()), missing, duplicated, timestamp_type


def report(
    args: argparse.Namespace,
    phases: dict[str, Phase],
    api: Api,
    lag_rows: list[Lag],
    missing: int,
    duplicated: int,
    timestamp_type: int,
    idle: dict[str, float],
) -> str:
    ceil, subj = phases["livez-closed"], phases["create-closed"]
    base_open, subj_open = phases["livez-open"], phases["create-open"]
    rows: list[tuple[str, str, str, str, str]] = []

    def row(figure: str, value: float, baseline: float, unit: str, aim: str = "") -> None:
        ratio = value / baseline if baseline else float("nan")
        rows.append((figure, fmt(value, unit), fmt(baseline, unit), fmt(ratio, "x"), aim))

    c, r = args.concurrency, args.rate
    ratio = subj.throughput / ceil.throughput if ceil.throughput else 0.0
    row(
        f"closed loop C={c}: creates/s (baseline GET /livez req/s)",
        subj.throughput,
        ceil.throughput,
        "/s",
        f">= {AIM_RATIO} {aim_mark(ratio >= AIM_RATIO)}",
    )
    row(f"closed loop C={c}: p50 latency", subj.ms(50), ceil.ms(50), "ms")
    row(f"closed loop C={c}: p99 latency", subj.ms(99), ceil.ms(99), "ms")
    row(f"open loop {r:g}/s: achieved rate", subj_open.throughput, base_open.throughput, "/s")
    row(f"open loop {r:g}/s: p50 latency", subj_open.ms(50), base_open.ms(50), "ms")
    p99 = subj_open.ms(99)
    row(
        f"open loop {r:g}/s: p99 latency",
        p99,
        base_open.ms(99),
        "ms",
        f"< {AIM_OPEN_P99_MS:g} ms {aim_mark(p99 < AIM_OPEN_P99_MS)}",
    )
    row(f"open loop {r:g}/s: max latency", subj_open.ms(100), base_open.ms(100), "ms")
    kind = "CreateTime" if timestamp_type == 0 else "LogAppendTime"
    labels = {"create-closed": f"closed loop C={c}", "create-open": f"open loop {r:g}/s"}
    for lag in lag_rows:
        if not lag.receive_ms or lag.name not in labels:
            continue  # the warm-up's incidents count below, their lag is not reported
        label = labels[lag.name]
        lag_p99 = percentile(lag.receive_ms, 99)
        aim = ""
        if lag.name == "create-open":
            aim = f"< {AIM_LAG_P99_MS:g} ms {aim_mark(lag_p99 < AIM_LAG_P99_MS)}"
        rows.append(
            (f"201 -> Kafka receive, {label}: p50", fmt(percentile(lag.receive_ms, 50), "ms"),
             "-", "-", "")
        )  # fmt: skip
        rows.append((f"201 -> Kafka receive, {label}: p99", fmt(lag_p99, "ms"), "-", "-", aim))
        rows.append(
            (f"201 -> record {kind}, {label}: p50/p99",
             f"{percentile(lag.record_ms, 50):.0f}/{percentile(lag.record_ms, 99):.0f} ms",
             "-", "-", "")
        )  # fmt: skip
    rows.append(
        (
            "events: created / missing / duplicated",
            f"{len(api.created)} / {missing} / {duplicated}",
            "-",
            "-",
            aim_mark(missing == 0),
        )
    )
    errors = sum(p.errors for p in phases.values())
    rows.append(("request errors (all phases)", str(errors), "-", "-", aim_mark(errors == 0)))

    head = ("figure", "value", "baseline", "ratio", "aim")
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return " | ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(head), "-+-".join("-" * w for w in widths), *map(line, rows)]
    out.append(f"creates/s / ceiling req/s = {ratio:.3f} (aim >= {AIM_RATIO})")
    for phase in (subj, ceil):
        out.append(f"{phase.name} answers per second: {' '.join(map(str, phase.per_second))}")
    out.append(
        f"before the load (idle probe, {IDLE_PROBE_SECONDS:g} s): "
        + ", ".join(f"{name} {value:.2f}" for name, value in idle.items())
        + " cores"
    )
    out.append("")
    names = ["client", "service", "tail", "db", "kafka", "others", "machine"]
    out.append("cores used per phase (CPU s / wall s; machine = all processes, of "
               f"{os.cpu_count()} cores), and service CPU per request")  # fmt: skip
    out.append(
        "phase          "
        + "".join(f"{n:>9}" for n in names)
        + f"{'service ms/req':>16}{'max send delay':>16}"
    )
    for phase in phases.values():
        requests = len(phase.latencies) + phase.errors
        service_cpu = phase.cores.get("service", 0) * phase.elapsed
        per_request = service_cpu / requests * 1000 if requests else float("nan")
        delay = f"{phase.send_delay_max * 1000:.1f} ms" if phase.name.endswith("open") else "-"
        out.append(
            f"{phase.name:<15}"
            + "".join(f"{phase.cores[n]:>9.2f}" if n in phase.cores else f"{'-':>9}" for n in names)
            + f"{per_request:>16.2f}{delay:>16}"
        )
    if api.first_error:
        out.append(f"first error: {api.first_error}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# The run


def mongo_port(url: str) -> int | None:
    nodes = uri_parser.parse_uri(url)["nodelist"]
    return int(nodes[0][1]) if len(nodes) == 1 else None


async def drop_database(mongo: AsyncMongoClient[Any], name: str) -> None:
    """Drop the scratch database, again if it reappears: FerretDB still runs requests that a
    stopped (or killed) service left queued, and an update re-creates the collection."""
    for _ in range(5):
        await mongo.drop_database(name)
        await asyncio.sleep(1.0)
        if name not in await mongo.list_database_names():
            return
    print(f"warning: could not drop the scratch database {name}", flush=True)


async def run(args: argparse.Namespace) -> int:
    current = asyncio.current_task()
    if current is not None:  # SIGTERM (e.g. from `timeout`): clean up as on Ctrl-C
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
    database = f"bench_incidents_{uuid.uuid4().hex[:12]}"
    extra = dict(item.split("=", 1) for item in args.service_env)
    print(f"scratch database {database}; service env extras: {extra or 'none'}", flush=True)
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(args.mongo_url, serverSelectionTimeoutMS=5000)
    tail = Tail(args.kafka_bootstrap, TOPIC)
    service = start_service(
        bootstrap=args.kafka_bootstrap, mongo_url=args.mongo_url, database=database, extra_env=extra
    )
    try:
        await wait_ready(service, within=90)
        _, partitions = await tail.receive(within=60)
        print(f"service ready at {service.base_url}; tail on {partitions} partitions", flush=True)
        kafka_port = int(args.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])
        meter = CpuMeter.of(
            {
                "client": os.getpid(),
                "service": service.process.pid,
                "tail": tail.process.pid,
                "db": listening_pid(port) if (port := mongo_port(args.mongo_url)) else None,
                "kafka": listening_pid(kafka_port),
            }
        )
        token = mint_dev_token(
            service.signing_key,
            subject="bench-requester",
            roles=["requester"],
            issuer=ISSUER,
            audience=AUDIENCE,
        )
        api = Api(token)
        phases: dict[str, Phase] = {}
        seconds, c = args.seconds, args.concurrency
        # What else keeps the machine (and a shared database) busy before any load.
        before = meter.snapshot()
        await asyncio.sleep(IDLE_PROBE_SECONDS)
        idle = CpuMeter.cores(before, meter.snapshot())
        idle = {name: idle[name] for name in ("machine", "db") if name in idle}
        print(f"idle probe: {idle}", flush=True)

        async with new_client(service.base_url, c) as client:
            print(f"closed loop: GET /livez, {c} connections, {seconds:g}s", flush=True)
            await closed_loop(client, api.livez, "warmup", c, WARMUP_SECONDS)
            phases["livez-closed"] = await measured(
                meter, closed_loop(client, api.livez, "livez-closed", c, seconds)
            )
            print(f"closed loop: POST {INCIDENTS}, {c} connections, {seconds:g}s", flush=True)
            await closed_loop(client, api.create, "create-warmup", c, WARMUP_SECONDS)
            phases["create-closed"] = await measured(
                meter, closed_loop(client, api.create, "create-closed", c, seconds)
            )
        tail.send("expect", list(api.created))
        tail.send("drain", args.drain_timeout)
        _, backlog = await tail.receive(within=args.drain_timeout + 30)
        if backlog:
            print(f"warning: {backlog} events still not on Kafka before the open loop", flush=True)
        stored = await mongo[database]["incidents"].count_documents({})
        print(f"{stored} incidents stored before the open loop", flush=True)

        async with new_client(service.base_url, args.open_connections) as client:
            # Open the pool's connections before the clock starts.
            await closed_loop(client, api.livez, "warmup", c, WARMUP_SECONDS)
            for name, request in (("livez-open", api.livez), ("create-open", api.create)):
                print(f"open loop: {name}, {args.rate:g}/s for {seconds:g}s", flush=True)
                phases[name] = await measured(
                    meter, open_loop(client, request, name, args.rate, seconds)
                )
        tail.send("expect", list(api.created))
        tail.send("drain", args.drain_timeout)
        await tail.receive(within=args.drain_timeout + 30)
        tail.send("finish", args.duplicate_grace)
        _, records = await tail.receive(within=args.duplicate_grace + 30)
    finally:
        tail.close()
        stop_service(service)
        try:
            await drop_database(mongo, database)
        finally:
            await mongo.close()

    lag_rows, missing, duplicated, timestamp_type = lags(api, records)
    print()
    print(report(args, phases, api, lag_rows, missing, duplicated, timestamp_type, idle))
    print(f"\nincidents stored when the open loop started: {stored}")
    print(
        "lag = consumer receive time (wall clock of the tail process) - time the client got "
        f"the 201; record timestamp = producer {'CreateTime' if timestamp_type == 0 else 'LAT'}"
    )
    return 0 if missing == 0 else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.incident_api", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop connections")
    parser.add_argument("--rate", type=float, default=300.0, help="open-loop requests/s")
    parser.add_argument(
        "--open-connections", type=int, default=256, help="open-loop connection pool bound"
    )
    parser.add_argument(
        "--kafka-bootstrap", default=os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--mongo-url", default=os.environ.get("ITSM_MONGO_URL", "mongodb://127.0.0.1:27017")
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the service, e.g. ITSM_RELAY_POLL_INTERVAL=60 (repeatable)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for every created incident's event on Kafka (twice per run)",
    )
    parser.add_argument(
        "--duplicate-grace",
        type=float,
        default=1.0,
        help="seconds the consumer keeps reading after that, to catch duplicates",
    )
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.service_env):
        parser.error("--service-env takes KEY=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted; the service was stopped and the scratch database dropped", flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
