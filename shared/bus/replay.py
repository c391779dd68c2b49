"""Replay dead letters: put records from `itsm.deadletter.v1` back on the topic they came from.

`python -m shared.bus.replay [--source-topic T] [--group G] [--error TEXT] [--since ISO-TIME]
[--dry-run]` reads the dead-letter topic from `--since` (default: its beginning) up to its end
at the start of the run, selects the letters that match every filter given, and publishes each
one's original key, value and headers (without the `dlq-*` headers) to its source topic. The
consumers are idempotent (sequence guards, event ids), so a letter replayed twice, or one whose
event was since applied another way, changes nothing. Typical use: after an upgrade that taught
a consumer a new event version, replay the letters it refused (`--group`, `--error 'unknown'`).

A copy cut to fit the dead-letter topic (`dlq-truncated`) is not the original and is skipped
(listed). Run it with credentials that may write the source topics (an operator's principal, not
a service's: each service may write only its own topics).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.bus.limits import REQUEST_TIMEOUT_MS, FetchLimits, fetch_limits
from shared.bus.port import DeadLetterHeaders
from shared.bus.security import kafka_client_kwargs
from shared.contracts.topics import Topic
from shared.settings import ServiceSettings

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class LetterFilter:
    source_topic: str | None = None
    group: str | None = None
    error: str | None = None  # a substring of dlq-error

    def matches(self, headers: Headers) -> bool:
        found = {key: value.decode(errors="replace") for key, value in headers}
        return (
            (self.source_topic is None or found.get(DeadLetterHeaders.TOPIC) == self.source_topic)
            and (self.group is None or found.get(DeadLetterHeaders.GROUP) == self.group)
            and (self.error is None or self.error in found.get(DeadLetterHeaders.ERROR, ""))
        )


@dataclass(frozen=True)
class Replay:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Skip:
    reason: str


def replay_of(key: bytes | None, value: bytes | None, headers: Headers) -> Replay | Skip:
    """The original record of a dead letter, or why it cannot be put back."""
    found = dict(headers)
    if DeadLetterHeaders.TRUNCATED in found:
        return Skip(
            f"cut to fit the dead-letter topic (was {found[DeadLetterHeaders.TRUNCATED]!r} bytes)"
        )
    source = found.get(DeadLetterHeaders.TOPIC)
    if not source:
        return Skip("no dlq-source-topic header")
    original = tuple((k, v) for k, v in headers if not k.startswith("dlq-"))
    return Replay(source.decode(), key, value, original)


@dataclass
class ReplayReport:
    replayed: int = 0
    skipped: int = 0
    not_matching: int = 0


async def replay_dead_letters(
    bootstrap: str,
    letters: LetterFilter,
    *,
    since: datetime | None = None,
    dry_run: bool = False,
    security: dict[str, Any] | None = None,
    fetch: FetchLimits | None = None,
    out: Any = sys.stdout,
) -> ReplayReport:
    """Replay the matching dead letters present when the run starts (not those it causes)."""
    report = ReplayReport()
    security = security or {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        **(fetch or FetchLimits()).consumer_kwargs(),
        **security,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        **security,
    )
    await consumer.start()
    await producer.start()
    try:
        # partitions_for_topic answers from cached metadata, which holds only subscribed topics
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(str(Topic.DEAD_LETTER), p)
            for p in sorted(consumer.partitions_for_topic(str(Topic.DEAD_LETTER)) or ())
        ]
        if not partitions:
            return report
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await _seek_to_start(consumer, partitions, since)
        pending = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1_000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        pending.discard(tp)
                        break
                    await _replay_one(record, letters, producer, report, dry_run, out)
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        await producer.flush()
    finally:
        await producer.stop()
        await consumer.stop()
    print(
        f"replayed {report.replayed}, skipped {report.skipped}, "
        f"not matching {report.not_matching}{' (dry run)' if dry_run else ''}",
        file=out,
    )
    return report


async def _seek_to_start(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since: datetime | None
) -> None:
    """Explicit offsets: aiokafka's seek_to_beginning right after assign can lose to the
    assignment's own reset to the end."""
    starts = await consumer.beginning_offsets(partitions)
    if since is not None:
        ends = await consumer.end_offsets(partitions)
        found = await consumer.offsets_for_times(
            {tp: int(since.timestamp() * 1000) for tp in partitions}
        )
        starts = {tp: at.offset if (at := found.get(tp)) else ends[tp] for tp in partitions}
    for tp in partitions:
        consumer.seek(tp, starts[tp])


async def _replay_one(
    record: Any,
    letters: LetterFilter,
    producer: AIOKafkaProducer,
    report: ReplayReport,
    dry_run: bool,
    out: Any,
) -> None:
    headers = list(record.headers)
    if not letters.matches(headers):
        report.not_matching += 1
        return
    where = f"{record.topic}[{record.partition}]@{record.offset}"
    outcome = replay_of(record.key, record.value, headers)
    if isinstance(outcome, Skip):
        report.skipped += 1
        print(f"skip {where}: {outcome.reason}", file=out)
        return
    report.replayed += 1
    print(f"{'would replay' if dry_run else 'replay'} {where} -> {outcome.topic}", file=out)
    if not dry_run:
        await producer.send_and_wait(
            outcome.topic, value=outcome.value, key=outcome.key, headers=list(outcome.headers)
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.bus.replay", description=__doc__)
    parser.add_argument("--source-topic", help="only letters from this topic")
    parser.add_argument("--group", help="only letters this consumer group refused")
    parser.add_argument("--error", help="only letters whose dlq-error contains this text")
    parser.add_argument("--since", type=datetime.fromisoformat, help="ISO time (with offset)")
    parser.add_argument("--dry-run", action="store_true", help="list, publish nothing")
    args = parser.parse_args(argv)
    settings = ServiceSettings()  # ITSM_KAFKA_BOOTSTRAP and the Kafka security settings
    report = asyncio.run(
        replay_dead_letters(
            settings.kafka_bootstrap,
            LetterFilter(args.source_topic, args.group, args.error),
            since=args.since,
            dry_run=args.dry_run,
            security=kafka_client_kwargs(settings),
            fetch=fetch_limits(settings),
        )
    )
    return 1 if report.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
