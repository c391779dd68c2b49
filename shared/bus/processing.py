"""Per-record processing shared by both bus adapters: decode, dead-letter, retry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from prometheus_client import Counter

from shared.bus.port import DeadLetterHeaders, Handler, PermanentEventError, TransientError
from shared.contracts.codec import KafkaRecord, UndecodableRecord, decode
from shared.contracts.envelope import Envelope
from shared.contracts.topics import Topic
from shared.metrics import DEAD_LETTERED

log = structlog.get_logger(__name__)
_tracer = trace.get_tracer("itsm.bus")

CONSUMED = Counter(
    "itsm_consumed_events_total", "Events handled by a consumer group", ["topic", "group"]
)


@dataclass(frozen=True)
class SourcePosition:
    topic: str
    partition: int
    offset: int


@dataclass
class RetryPolicy:
    """Backoff for handler failures. Transient errors retry forever (a dependency that is away
    must not make us drop events); other exceptions retry `max_attempts` times, then the record
    is dead-lettered so one bad event cannot stall its partition."""

    initial: float = 0.05
    maximum: float = 5.0
    max_attempts: int = 5

    def delay(self, attempt: int) -> float:
        return float(min(self.maximum, self.initial * (2 ** (attempt - 1))))


PublishRecord = Callable[[str, KafkaRecord], Awaitable[None]]

# What a dead letter may weigh (key, value and headers): below the producers' request limits
# (aiokafka's 1 MiB, Faust's 1,000,000 bytes) with room for the dlq-* headers. The broker accepts
# records up to its message.max.bytes (1 MiB by default), so a record can be too big to copy
# whole: its copy keeps the first bytes of the value and says so (dlq-truncated).
MAX_DEAD_LETTER_BYTES = 900_000
_KEEP_KEY = 1_024  # of a key that is itself most of the weight


def _weight(key: bytes | None, value: bytes | None, headers: tuple[tuple[str, bytes], ...]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers)


def fit_dead_letter(record: KafkaRecord, limit: int = MAX_DEAD_LETTER_BYTES) -> KafkaRecord:
    """The record, or a copy cut to `limit` bytes with a dlq-truncated header."""
    size = _weight(record.key, record.value, record.headers)
    if size <= limit:
        return record
    key, headers = record.key, record.headers
    if _weight(key, b"", headers) > limit // 2:  # hostile keys or headers: keep a little
        key, headers = (key or b"")[:_KEEP_KEY], ()
    room = max(0, limit - _weight(key, b"", headers))
    truncated = ((DeadLetterHeaders.TRUNCATED, str(size).encode()),)
    return KafkaRecord(key=key, value=(record.value or b"")[:room], headers=(*headers, *truncated))


class RecordProcessor:
    def __init__(
        self,
        group: str,
        handler: Handler,
        publish_record: PublishRecord,
        retry: RetryPolicy | None = None,
        dead_letter_topic: str = Topic.DEAD_LETTER,
    ) -> None:
        self.group = group
        self.handler = handler
        self.publish_record = publish_record
        self.retry = retry or RetryPolicy()
        self.dead_letter_topic = dead_letter_topic
        self.processed = 0

    async def process(self, record: KafkaRecord, position: SourcePosition) -> None:
        """Handle one record; returns when it is applied or dead-lettered (then commit)."""
        try:
            envelope = decode(record)
        except UndecodableRecord as exc:
            await self.dead_letter(record, position, exc.reason)
            return
        name, kind, parent = self._span_parent(record, position)
        token = otel_context.attach(parent)
        try:
            with _tracer.start_as_current_span(
                name,
                kind=kind,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": position.topic,
                    "messaging.consumer.group.name": self.group,
                    "messaging.message.id": envelope.id,
                    "cloudevents.event_type": envelope.type,
                    "cloudevents.event_subject": envelope.subject,
                },
            ):
                await self._handle_with_retry(envelope, record, position)
        finally:
            otel_context.detach(token)

    @staticmethod
    def _span_parent(
        record: KafkaRecord, position: SourcePosition
    ) -> tuple[str, trace.SpanKind, otel_context.Context]:
        """The record's trace context (its `traceparent` header) as the parent, unless a span
        of that trace is current already: Faust's OpenTelemetry sensor opens one per event,
        and the handling nests under it rather than beside it."""
        current = trace.get_current_span().get_span_context()
        parent = extract({k: v.decode("latin-1") for k, v in record.headers})
        remote = trace.get_current_span(parent).get_span_context()
        if current.is_valid and (not remote.is_valid or remote.trace_id == current.trace_id):
            return f"{position.topic} handle", trace.SpanKind.INTERNAL, otel_context.get_current()
        return f"{position.topic} process", trace.SpanKind.CONSUMER, parent

    async def _handle_with_retry(
        self, envelope: Envelope, record: KafkaRecord, position: SourcePosition
    ) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.handler(envelope)
            except PermanentEventError as exc:
                await self.dead_letter(record, position, f"rejected: {exc}")
                return
            except TransientError as exc:
                log.warning(
                    "handler.transient_failure",
                    group=self.group,
                    event_id=envelope.id,
                    attempt=attempt,
                    error=str(exc),
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("handler.failure", group=self.group, event_id=envelope.id)
                if attempt >= self.retry.max_attempts:
                    await self.dead_letter(
                        record, position, f"handler failed {attempt} times: {exc!r}"[:400]
                    )
                    return
            else:
                self.processed += 1
                CONSUMED.labels(position.topic, self.group).inc()
                return
            await asyncio.sleep(self.retry.delay(attempt))

    async def dead_letter(self, record: KafkaRecord, position: SourcePosition, reason: str) -> None:
        """Publish the record to the dead-letter topic, retrying until the broker takes it: a
        failure here must neither drop the record nor end the consumer."""
        record = fit_dead_letter(record)
        headers = (
            *record.headers,
            (DeadLetterHeaders.ERROR, reason.encode()),
            (DeadLetterHeaders.TOPIC, position.topic.encode()),
            (DeadLetterHeaders.PARTITION, str(position.partition).encode()),
            (DeadLetterHeaders.OFFSET, str(position.offset).encode()),
            (DeadLetterHeaders.GROUP, self.group.encode()),
        )
        letter = KafkaRecord(key=record.key, value=record.value, headers=headers)
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.publish_record(self.dead_letter_topic, letter)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "record.dead_letter_failed",
                    group=self.group,
                    topic=position.topic,
                    offset=position.offset,
                    attempt=attempt,
                    error=repr(exc),
                )
                await asyncio.sleep(self.retry.delay(attempt))
        DEAD_LETTERED.labels(position.topic, self.group).inc()
        log.warning(
            "record.dead_lettered",
            group=self.group,
            topic=position.topic,
            partition=position.partition,
            offset=position.offset,
            reason=reason,
        )
