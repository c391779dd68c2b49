"""SLA processor workers as real subprocesses (`python -m services.sla.processor.worker`) on the
real local broker, for the scaling, recovery and poison-record tests.

Each worker gets its own environment (settings `ITSM_SLA_…`) and a log file under the test's
tmp_path; JSON log lines are parsed so a test can read what a worker did (e.g. which partitions
it re-armed after a rebalance). The platform topics are shared with everyone using the broker,
so every test run has its own Faust app id (consumer group, changelog and due topic, deleted at
the end), starts at the end of the incident topic and only looks at its own ticket ids.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.sla.domain.kpi_partials import KpiPartial
from shared.contracts.codec import KafkaRecord, decode
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import IncidentResolved
from shared.contracts.topics import Topic
from shared.ids import uuid7
from tests.faust.events import created, record
from tests.support.kafka import TopicTail
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
START_HINT = "start the local stack first: python -m devtools.localstack up"
REARMED = "sla.wakeups.rearmed"


def run_id() -> str:
    return uuid7().replace("-", "")[-12:]


def worker_env(
    bootstrap: str,
    app_id: str,
    *,
    partitions: int,
    targets: Mapping[str, Mapping[str, float]],
    data_dir: Path,
    store: str = "memory://",
    session_timeout: float = 6.0,
    tick_retry: float = 5.0,
) -> dict[str, str]:
    """The environment of a worker: its own app id, tiny targets, JSON logs, the broker's floor
    for the session timeout (so a killed worker's partitions move quickly)."""
    return {
        **os.environ,
        "ITSM_KAFKA_BOOTSTRAP": bootstrap,
        "ITSM_SLA_APP_ID": app_id,
        "ITSM_SLA_AUTO_OFFSET_RESET": "latest",  # the incident topic is shared: no history
        "ITSM_SLA_TARGETS": json.dumps(targets),
        "ITSM_SLA_TOPIC_PARTITIONS": str(partitions),
        "ITSM_SLA_STORE": store,
        "ITSM_SLA_DATA_DIR": str(data_dir),
        "ITSM_SLA_SESSION_TIMEOUT": str(session_timeout),
        "ITSM_SLA_TICK_RETRY": str(tick_retry),
        "ITSM_LOG_JSON": "true",
    }


WORKER_ARGV = ("-m", "services.sla.processor.worker", "worker", "--loglevel=info")


def api_argv(app_factory: str, port: int) -> tuple[str, ...]:
    """A service API served by uvicorn, e.g. `services.incidents.main:create_app`."""
    return ("-m", "uvicorn", app_factory, "--factory", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log")  # fmt: skip


@dataclass
class ServiceProcess:
    """One service subprocess (by default an SLA worker; `api_argv` for an API); `log`
    collects its stdout and stderr."""

    name: str
    env: dict[str, str]
    log: Path
    argv: tuple[str, ...] = WORKER_ARGV
    proc: asyncio.subprocess.Process | None = None
    stopped: bool = False  # on purpose (stop or kill), as opposed to crashed
    _out: Any = field(default=None, repr=False)

    async def start(self) -> None:
        assert self.proc is None or self.proc.returncode is not None, f"{self.name} is running"
        self._out = self.log.open("ab")
        self.stopped = False
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *self.argv,
            cwd=ROOT, env=self.env, stdout=self._out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """kill -9: no goodbye to the group, no flush, no commit."""
        assert self.proc is not None
        self.stopped = True
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self._close_log()

    async def stop(self, timeout: float = 20.0) -> None:
        """Faust's graceful stop (SIGTERM: commits and leaves the group); kill -9 if it hangs."""
        self.stopped = True
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.returncode is not None and not self.stopped:
            pytest.fail(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def events(self, name: str) -> list[dict[str, Any]]:
        """The structured log entries whose event is `name`. Faust's worker installs its own log
        handler, which prints a structlog entry as a dict after its `[time] [pid] [LEVEL]`
        prefix; a JSON line is read too."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if name not in line or "{" not in line:
                continue
            text = line[line.index("{") :].strip()
            with contextlib.suppress(ValueError, SyntaxError):
                entry = json.loads(text) if text.startswith('{"') else ast.literal_eval(text)
                if isinstance(entry, dict) and entry.get("event") == name:
                    found.append(entry)
        return found

    def owned(self) -> set[int] | None:
        """The partitions this worker last re-armed after a rebalance (what it owns now)."""
        rearmed = self.events(REARMED)
        return set(rearmed[-1]["partitions"]) if rearmed else None


SlaWorker = ServiceProcess  # the name the SLA tests use


@contextlib.asynccontextmanager
async def sla_workers(bootstrap: str, app_id: str) -> AsyncIterator[list[SlaWorker]]:
    """Collects the workers a test starts; stops them and deletes the app's topics afterwards."""
    workers: list[SlaWorker] = []
    try:
        yield workers
    finally:
        for worker in workers:
            await worker.stop()
        await delete_topics_of(bootstrap, app_id)


async def partition_count(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
    try:
        await admin.start()
        [described] = await admin.describe_topics([topic])
    except Exception as exc:
        pytest.fail(f"no Kafka broker at {bootstrap} ({exc!r}); {START_HINT}")
    finally:
        await admin.close()
    return len(described["partitions"]) or 6  # missing: the worker creates it with 6


async def delete_topics_of(bootstrap: str, app_id: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(f"{app_id}-")]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The offsets `group` has committed, by partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def committed_partitions(bootstrap: str, group: str, topic: str) -> set[int]:
    """The partitions of `topic` for which `group` has committed an offset."""
    return {tp.partition for tp in await committed_offsets(bootstrap, group) if tp.topic == topic}


def latest_partials(records: list[Any], service: str) -> list[KpiPartial]:
    """The KPI snapshots of `service`'s partials among `records`, the latest of each (what a
    consumer of the compacted topic keeps)."""
    latest: dict[str, Envelope] = {}
    for r in records:
        event = decode(r)
        if event.data["service"] == service and (
            event.subject not in latest or latest[event.subject].sequence <= event.sequence
        ):
            latest[event.subject] = event
    return [KpiPartial.from_document(e.data) for e in latest.values()]


class IncidentFeed:
    """Publishes incident events as the incidents service does (key = ticket id) and remembers
    each ticket's partition and next sequence."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.partitions: dict[str, int] = {}
        self._sequences: dict[str, int] = {}

    async def send(self, rec: KafkaRecord, partition: int | None = None) -> int:
        meta = await self.producer.send_and_wait(
            Topic.INCIDENTS, rec.value, key=rec.key, headers=list(rec.headers), partition=partition
        )
        return int(meta.partition)

    async def event(self, event: Any, at: datetime, partition: int | None = None) -> int:
        ticket_id = event.incident_id
        sequence = self._sequences.get(ticket_id, 0) + 1
        self._sequences[ticket_id] = sequence
        written = await self.send(record(event, sequence, at), partition)
        self.partitions[ticket_id] = written
        return written

    async def create(
        self, ticket_id: str, at: datetime, priority: Any = "P1", partition: int | None = None
    ) -> int:
        return await self.event(created(ticket_id, at, priority=priority), at, partition)

    async def resolve(self, ticket_id: str, at: datetime) -> int:
        event = IncidentResolved(
            incident_id=ticket_id, actor="ann", status="resolved", resolution_code="fixed",
            resolution_notes="done", resolved_at=at, first_contact_resolution=False,
            group=None, tier=None,
        )  # fmt: skip
        return await self.event(event, at, self.partitions.get(ticket_id))


@contextlib.asynccontextmanager
async def incident_feed(bootstrap: str) -> AsyncIterator[IncidentFeed]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        yield IncidentFeed(producer)
    finally:
        await producer.stop()


def facts_of(sla: TopicTail, prefix: str) -> list[Any]:
    """The records on the SLA topic whose key (ticket id) starts with `prefix`."""
    return [r for r in sla.records if (r.key or b"").decode().startswith(prefix)]


def decoded(records: list[Any]) -> list[Envelope]:
    return [decode(KafkaRecord(r.key, r.value, tuple(r.headers))) for r in records]


async def wait_until_answering(
    sla: TopicTail,
    feed: IncidentFeed,
    workers: list[SlaWorker],
    prefix: str,
    partitions: int,
    *,
    timeout: float = 40.0,
) -> float:
    """Until every partition of the incident topic is consumed: a probe ticket is created on each
    partition not yet answered (the workers start at the end of the topic once they own it, so
    a probe sent before may be missed) until each one's started facts come back. Returns the
    seconds it took."""
    started = time.monotonic()
    answered: set[int] = set()
    round_ = 0

    def probes_answered(records: list[Any]) -> bool:
        for rec in facts_of(sla, prefix):
            answered.add(int(rec.key.decode().rsplit("-", 2)[-2]))
        return answered >= set(range(partitions))

    while time.monotonic() - started < timeout:
        for worker in workers:
            worker.check_alive()
        round_ += 1
        for p in sorted(set(range(partitions)) - answered):
            await feed.create(f"{prefix}-{p}-{round_}", datetime.now(UTC), "P3", p)
        with contextlib.suppress(AssertionError):
            await sla.collect(probes_answered, timeout=1.0, what="probe answers")
            return time.monotonic() - started
    missing = set(range(partitions)) - answered
    pytest.fail(f"partitions {missing} never answered a probe:\n{worker_logs(workers)}")


def worker_logs(workers: list[SlaWorker], chars: int = 4000) -> str:
    """The end of each worker's log, for a failure message."""
    return "\n".join(f"--- {w.name}:\n{w.tail(chars)}" for w in workers)


async def until(
    condition: Callable[[], bool], *, timeout: float, what: str, workers: list[SlaWorker]
) -> None:
    """`eventually` for a synchronous condition, failing early when a worker died."""

    async def probe() -> bool:
        for worker in workers:
            worker.check_alive()
        return condition()

    await eventually(probe, timeout=timeout, what=what)
