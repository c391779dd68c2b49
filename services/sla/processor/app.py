"""The Faust application: `create_app(settings)` wires topics, the state table, the agents and the
wake-up timer around `SlaProcessor`. Nothing happens at import time.

- `sla-incidents` consumes the incident events (raw bytes and headers, CloudEvents), drives the
  engine per ticket, publishes the SLA facts and stores the state in the `sla-state` table
  (changelog-backed, keyed by ticket id, co-partitioned with the incident events).
- `sla-wakeups` (a timer on every worker, every `tick_interval` seconds) sends, for the owned
  tickets whose next wake-up has come, one due record per partition listing them to
  `<app_id>-sla-due`, a topic with the same partition count, to the partition of their states --
  at most `due_batch` tickets unanswered at a time, queued on the producer without waiting for
  the acknowledgements (checked on the next tick). Timers cannot write tables (writes need the
  partition of the event being processed), so:
- `sla-due` consumes the due records and applies the alerts that fell due, in the table: the
  facts of all the record's tickets are acknowledged together, then their states stored.
- On every assignment the wake-up index keeps only owned partitions; once the table has
  recovered, it is rebuilt from the table, so the new owner of a partition re-arms its tickets.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
import structlog
from faust.contrib.opentelemetry import setup_opentelemetry
from faust.exceptions import ConsumerNotStarted
from opentelemetry import trace

from services.sla.domain import PolicyCatalog
from services.sla.processor.catalog import default_catalog
from services.sla.processor.codec import StateFormatError, stored
from services.sla.processor.fetching import applied, hold_commits, in_order
from services.sla.processor.handling import Clock, Handled, SlaProcessor
from services.sla.processor.kpis import KpiPublisher, KpiRecorder, is_kpi_key
from services.sla.processor.metrics import faust_consumer_lags
from services.sla.processor.policies import PolicyFeed
from services.sla.processor.publishing import FaustSink, RecordSink, normalise_headers
from services.sla.processor.settings import SlaSettings
from services.sla.processor.topics import SlaApp, due_topic, due_topic_name, platform_topic
from services.sla.processor.wakeups import Wakeup, WakeupIndex
from shared.bus.processing import SourcePosition
from shared.bus.security import KafkaSecurity, kafka_security
from shared.contracts.codec import KafkaRecord
from shared.contracts.topics import Topic
from shared.heap import release_free_heap
from shared.metrics import ConsumerLag

log = structlog.get_logger(__name__)

TABLE = "sla-state"


@dataclass
class SlaComponents:
    """Handles on what `create_app` built (`app.sla`), for tests and operations."""

    settings: SlaSettings
    processor: SlaProcessor
    index: WakeupIndex
    table: Any
    incident_agent: Any
    due_agent: Any
    topics: dict[str, Any]
    change_agent: Any = None  # streaming KPIs: change events in, snapshots out (kpis.py)
    kpis: KpiRecorder | None = None
    kpi_publisher: KpiPublisher | None = None

    def owned_partitions(self, tps: Iterable[Any]) -> set[int]:
        """The partitions of the table among `tps` (the consumed, co-partitioned topics)."""
        consumed = {self.processor.due_topic, str(Topic.INCIDENTS)}
        return {tp.partition for tp in tps if tp.topic in consumed}

    def rearm(self, partitions: set[int]) -> int:
        """Rebuild the wake-up index from the table for the tickets of `partitions`."""
        entries = []
        for ticket_id, value in self.table.items():
            if is_kpi_key(ticket_id):
                continue
            try:
                info = stored(value)
            except StateFormatError as exc:
                log.error("sla.state.unreadable", ticket_id=ticket_id, error=str(exc))
                continue
            if info.partition in partitions and info.wakeup is not None:
                entries.append(Wakeup(ticket_id, info.partition, info.wakeup))
        self.index.rebuild(entries)
        self.processor.alerts.clear_prepared()  # the rebuilt index has them: prepared again
        return len(entries)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def broker_credentials(security: KafkaSecurity) -> faust.types.auth.CredentialsT | None:
    """Faust's form of the platform's Kafka client security (shared/bus/security.py): SASL
    (SCRAM) over TLS, TLS/mTLS alone, or nothing for PLAINTEXT."""
    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.username,
            password=security.password,
            ssl_context=security.ssl_context,  # None: SASL_PLAINTEXT
            mechanism=security.mechanism,
        )
    if security.uses_tls:
        return faust.SSLCredentials(security.ssl_context)
    return None


def create_app(
    settings: SlaSettings | None = None,
    *,
    catalog: PolicyCatalog | None = None,
    clock: Clock | None = None,
    sink: RecordSink | None = None,
) -> faust.App:
    """The SLA processor as a Faust app. `catalog` defaults to `default_catalog(settings.targets)`;
    `clock` and `sink` are seams for tests (wall-clock UTC and the app's own topics otherwise)."""
    settings = settings or SlaSettings()
    if settings.store.startswith("rocksdb") and importlib.util.find_spec("rocksdict") is None:
        raise RuntimeError("ITSM_SLA_STORE=rocksdb:// needs the rocksdict package installed")
    partitions = settings.topic_partitions
    security = kafka_security(settings)
    app = SlaApp(
        settings.app_id,
        broker=settings.broker_urls(),
        broker_credentials=broker_credentials(security),
        store=settings.store,
        datadir=str(settings.data_dir) if settings.data_dir else None,
        processing_guarantee="at_least_once",
        topic_partitions=partitions,
        topic_replication_factor=settings.topic_replication_factor,
        topic_allow_declare=True,
        table_standby_replicas=settings.table_standby_replicas,
        consumer_auto_offset_reset=settings.auto_offset_reset,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        broker_request_timeout=max(settings.request_timeout, settings.session_timeout),
        producer_request_timeout=settings.producer_request_timeout,
        # what one worker holds before processing it (docs/security.md, bounded queues)
        broker_max_poll_records=settings.kafka_max_poll_records,
        consumer_max_fetch_size=settings.kafka_max_partition_fetch_bytes,
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        producer_acks=-1,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        autodiscover=False,
    )
    app.kafka_security = security.kwargs()  # for the processor's own aiokafka clients
    # A span per event processed, continuing the record's trace (the aiokafka instrumentation,
    # installed by the entry point's setup_tracing, adds send and receive spans).
    # One tracer for the sensor: left to itself it looks the tracer up for every event (2 % of
    # the worker's time). A proxy until the entry point installs the SDK, then the SDK's.
    setup_opentelemetry(app, tracer=trace.get_tracer("faust"))
    incidents = platform_topic(app, Topic.INCIDENTS, partitions)
    sla_topic = platform_topic(app, Topic.SLA, partitions)
    dead_letter = platform_topic(app, Topic.DEAD_LETTER, partitions)
    due = due_topic(app, settings.app_id, partitions)
    changes = platform_topic(app, Topic.CHANGES, partitions)
    kpi_topic = platform_topic(app, Topic.SLA_KPIS, partitions)
    # value_type stays None (JSON, plain dicts): Faust calls `value_type.from_data` when it
    # reads the changelog back, which a plain `dict` does not have -- recovery would fail.
    table = app.Table(TABLE, key_type=str, partitions=partitions)
    app.declared_topics = [
        incidents, sla_topic, dead_letter, due, changes, kpi_topic, table.changelog_topic
    ]  # fmt: skip
    app.copartitioned = [
        str(Topic.INCIDENTS),
        str(Topic.CHANGES),  # the change agent writes KPI partials to the table
        due_topic_name(settings.app_id),
        table.changelog_topic.get_topic_name(),
    ]

    topics = {t.get_topic_name(): t for t in (incidents, sla_topic, dead_letter, due, kpi_topic)}
    # The incident path's KPI plans are written in batches (kpis.py); 1 writes each at once.
    deferred = {str(Topic.INCIDENTS): settings.kpi_batch} if settings.kpi_batch > 1 else {}
    kpis = KpiRecorder(table, grace=timedelta(seconds=settings.kpi_grace), deferred=deferred)
    index = WakeupIndex()
    processor = SlaProcessor(
        table=table,
        # the aiokafka client Faust's producer runs (private: Faust has no public handle)
        sink=sink or FaustSink(topics, producer=lambda: cast(Any, app.producer)._ensure_producer()),
        catalog=catalog or default_catalog(settings.targets),
        index=index,
        group=settings.app_id,
        sla_topic=str(Topic.SLA),
        due_topic=due_topic_name(settings.app_id),
        dead_letter_topic=str(Topic.DEAD_LETTER),
        clock=clock or _utcnow,
        tick_retry=timedelta(seconds=settings.tick_retry),
        kpis=kpis,
        due_batch=settings.due_batch,
        prepare_ahead=timedelta(seconds=settings.prepare_ahead),
        prepare_limit=settings.prepare_limit,
    )
    kpi_publisher = KpiPublisher(
        kpis, processor.sink, kpi_topic=str(Topic.SLA_KPIS), due_topic=processor.due_topic,
        retention=timedelta(seconds=settings.kpi_retention), clock=processor.clock,
    )  # fmt: skip

    @app.agent(incidents, name="sla-incidents")
    async def incident_events(stream: Any) -> AsyncIterator[Handled]:
        # A record whose KPI plan is held in memory is read again after a crash: never commit
        # past it (kpis.py).
        hold_commits(app.consumer, "kpi-plans", lambda tp: kpis.first_unflushed(*tp))
        async for event in stream.events():
            message = event.message
            if not await in_order(app.consumer, message.tp, message.offset):
                continue
            record = KafkaRecord(event.key, event.value, normalise_headers(message.headers))
            position = SourcePosition(message.topic, message.partition, message.offset)
            handled = await processor.on_incident_record(record, position)
            applied(app.consumer, message.tp, message.offset)
            yield handled

    @app.agent(due, name="sla-due")
    async def due_records(stream: Any) -> AsyncIterator[Handled]:
        async for event in stream.events():
            message = event.message
            if not await in_order(app.consumer, message.tp, message.offset):
                continue
            position = SourcePosition(message.topic, message.partition, message.offset)
            handled = await processor.on_due_record(event.value, position)
            applied(app.consumer, message.tp, message.offset)
            yield handled

    @app.agent(changes, name="sla-changes")
    async def change_events(stream: Any) -> AsyncIterator[Handled]:
        async for event in stream.events():
            message = event.message
            if not await in_order(app.consumer, message.tp, message.offset):
                continue
            record = KafkaRecord(event.key, event.value, normalise_headers(message.headers))
            position = SourcePosition(message.topic, message.partition, message.offset)
            handled = await processor.on_change_record(record, position)
            applied(app.consumer, message.tp, message.offset)
            yield handled

    @app.timer(interval=settings.kpi_publish_interval, name="sla-kpis")  # type: ignore[untyped-decorator]
    async def publish_kpis() -> None:
        try:
            await kpi_publisher.publish()
        except Exception:  # what was not sent stays marked: it goes out on the next run
            log.exception("sla.kpis.publish_failed")

    @app.timer(interval=settings.tick_interval, name="sla-wakeups")  # type: ignore[untyped-decorator]
    async def wakeups() -> None:
        try:
            await processor.send_due()  # queues at most due_batch tickets; never awaits acks
        except Exception:  # the entries moved by tick_retry: they come round again
            log.exception("sla.wakeups.send_failed")

    if settings.prepare_ahead > 0:

        @app.task  # type: ignore[untyped-decorator]
        async def fire_prepared_alerts() -> None:
            await processor.fire_when_due()  # until the worker stops

    # The consumer lag of the agents' sources, as the platform's consumers report it
    # (shared/metrics.py); the processor itself counts timers and alerts.
    lag = ConsumerLag(settings.app_id)
    sources = {str(Topic.INCIDENTS), str(Topic.CHANGES), processor.due_topic}

    @app.timer(interval=settings.metrics_interval, name="sla-metrics")  # type: ignore[untyped-decorator]
    async def measure_lag() -> None:
        try:
            lag.report(faust_consumer_lags(app.consumer, sources))
        except ConsumerNotStarted:
            pass  # still starting up: nothing assigned yet
        except Exception:  # a metric never stops the worker; the next run measures again
            log.exception("sla.metrics.lag_failed")

    if settings.heap_trim_interval > 0:

        @app.timer(interval=settings.heap_trim_interval, name="sla-heap-trim")  # type: ignore[untyped-decorator]
        async def trim_heap() -> None:
            # In a thread: tens of ms on a large heap, and the event loop keeps the wake-ups.
            await asyncio.to_thread(release_free_heap)

    components = SlaComponents(
        settings, processor, index, table, incident_events, due_records, topics,
        change_agent=change_events, kpis=kpis, kpi_publisher=kpi_publisher,
    )  # fmt: skip
    app.sla = components
    # Managed policies: read from the compacted policies topic before any incident event.
    app.add_dependency(PolicyFeed(settings, processor))

    # Mode signals call receivers as (sender, *args, signal=…); args[0] is the set of TPs.
    async def forget_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        revoked = components.owned_partitions(args[0])
        index.forget(revoked)
        processor.forget(revoked)
        kpis.drop_pending(revoked)

    async def keep_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        index.retain(components.owned_partitions(args[0]))
        kpis.index.retain(components.owned_partitions(args[0]))

    async def rearm_after_recovery() -> None:
        owned = components.owned_partitions(app.consumer.assignment())
        count = components.rearm(owned)
        log.info("sla.wakeups.rearmed", partitions=sorted(owned), tickets=count)
        # Re-publish the partials of the owned partitions: a snapshot lost between a table
        # write and its publication goes out now.
        partials = kpis.rebuild(table.items(), owned)
        log.info("sla.kpis.republishing", partitions=sorted(owned), partials=partials)

    app.on_partitions_revoked.connect(cast(Any, forget_revoked))
    app.on_partitions_assigned.connect(cast(Any, keep_assigned))
    table.on_recover(rearm_after_recovery)
    return app
