"""Hostile Kafka records for tests/security/test_hostile_events.py: the malformed variants of a
valid record, the services on the real broker with consumer groups of their own, and watching
what the platform wrote to the dead-letter and event topics and to MongoDB.

The broker is shared (other tests, other runs): every consumer group a service subscribes gets
this run's suffix and starts at the end of its topics, every key carries the run id, and dead
letters are matched by the source position (topic, partition, offset) and consumer group their
dlq-* headers name.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.bus.kafka import KafkaBus, KafkaSubscription
from shared.bus.offsets import start_new_group_at_the_end
from shared.bus.port import DeadLetterHeaders, Handler
from shared.contracts.codec import KafkaRecord
from shared.contracts.topics import Topic
from tests.support.kafka import group_lag
from tests.support.polling import eventually

# The broker takes records up to message.max.bytes (1 MiB by default, with the batch's
# overhead); this one is just under it, and over what a dead letter may weigh.
OVERSIZE = 1_040_000


class IsolatedBus(KafkaBus):
    """The real Kafka adapter. Each group a service subscribes is renamed `<group>-<run>` and
    committed at the end of its topics first, so it sees only what the test sends from now on."""

    def __init__(self, bootstrap: str, run: str) -> None:
        super().__init__(bootstrap, client_id=f"hostile-{run}", start_timeout=15)
        self.run = run
        self.groups: dict[str, str] = {}  # the service's group name -> the one used

    async def subscribe(
        self, group: str, topics: Sequence[str], handler: Handler
    ) -> KafkaSubscription:
        name = f"{group}-{self.run}"
        await start_new_group_at_the_end(self.bootstrap_servers, name, topics)
        self.groups[group] = name
        return await super().subscribe(name, topics, handler)


@dataclass(frozen=True)
class Hostile:
    """A hostile record and what each consumer group must do with it: `reasons` maps a group
    (the service's name for it) to a fragment of the dlq-error it must dead-letter with; the
    groups on the topic not named must leave it alone (no letter, no change)."""

    name: str
    record: KafkaRecord
    reasons: dict[str, str]


def keyless(valid: KafkaRecord) -> KafkaRecord:
    """The record without its key and its subject."""
    return KafkaRecord(None, valid.value, _headers(valid, ce_subject=None))


def _headers(record: KafkaRecord, **changes: bytes | None) -> tuple[tuple[str, bytes], ...]:
    """The record's headers with `ce_x=value` changed (None: removed); new ones appended."""
    wanted = {k.replace("content_type", "content-type"): v for k, v in changes.items()}
    kept = [(k, wanted.get(k, v)) for k, v in record.headers]
    kept += [(k, v) for k, v in wanted.items() if k not in {n for n, _ in record.headers}]
    return tuple((k, v) for k, v in kept if v is not None)


def with_data(record: KafkaRecord, **changes: Any) -> KafkaRecord:
    """A binary-mode record with members of its JSON data changed (None: removed)."""
    data = json.loads(record.value)
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return KafkaRecord(record.key, json.dumps(data).encode(), record.headers)


def with_headers(record: KafkaRecord, **changes: bytes | None) -> KafkaRecord:
    return KafkaRecord(record.key, record.value, _headers(record, **changes))


def malformed(
    valid: KafkaRecord,
    groups: Iterable[str],
    *,
    bounded: str,
    unknown_type: str,
    compacted: bool = False,
) -> list[Hostile]:
    """The variants of `valid` (a binary-mode record of a registered type) that no consumer can
    apply, each dead-lettered by every one of `groups` with its reason; `bounded` names a
    string member of the data with a maximum length, `unknown_type` a type no consumer knows
    (left alone by the in-process consumers: they handle the types they know). A compacted
    topic gets no record without a key: the broker refuses those (`keyless`)."""
    every = list(groups)
    ce_type = dict(valid.headers)["ce_type"].decode()

    def all_(reason: str) -> dict[str, str]:
        return dict.fromkeys(every, reason)

    no_key = Hostile("no subject, no key", keyless(valid), all_("neither subject nor record key"))
    structured = {"specversion": "1.0", "type": ce_type, "id": "x", "data": {}}  # no source
    return [
        Hostile("oversized, not JSON", KafkaRecord(valid.key, b"\xff" * OVERSIZE, valid.headers),
                all_("data must be a JSON object")),
        Hostile("oversized member (1 MB string)", with_data(valid, **{bounded: "x" * OVERSIZE}),
                all_(f"invalid {ce_type} data")),
        Hostile("not JSON", KafkaRecord(valid.key, b"\x00\xff{not json", valid.headers),
                all_("data must be a JSON object")),
        Hostile("tombstone (no value)", KafkaRecord(valid.key, None, valid.headers),  # type: ignore[arg-type]
                all_(f"invalid {ce_type} data")),
        Hostile("JSON, no CloudEvent headers", KafkaRecord(valid.key, b'{"hello": "world"}', ()),
                all_("not a CloudEvent")),
        Hostile("structured mode without source", KafkaRecord(
            valid.key, json.dumps(structured).encode(),
            (("content-type", b"application/cloudevents+json"),)), all_("not a CloudEvent")),
        Hostile("specversion 0.3", with_headers(valid, ce_specversion=b"0.3"),
                all_("specversion")),
        Hostile("time not a timestamp", with_headers(valid, ce_time=b"yesterday at noon"),
                all_("not a CloudEvent")),
        Hostile("data a JSON string", KafkaRecord(valid.key, b'"just a string"', valid.headers),
                all_("data must be a JSON object")),
        Hostile("data a JSON array", KafkaRecord(valid.key, b"[1, 2, 3]", valid.headers),
                all_(f"invalid {ce_type} data")),
        Hostile("sequence not an integer", with_headers(valid, ce_sequence=b"seven"),
                all_("sequence must be an integer")),
        Hostile("negative sequence", with_headers(valid, ce_sequence=b"-3"),
                all_("sequence must not be negative")),
        *([] if compacted else [no_key]),
        Hostile("payload breaks its contract", KafkaRecord(
            valid.key, json.dumps({"unexpected": True}).encode(), valid.headers),
            all_(f"invalid {ce_type} data")),
        Hostile("unknown type version", with_headers(valid, ce_type=unknown_type.encode()), {}),
    ]  # fmt: skip


@dataclass
class Sent:
    hostile: Hostile
    topic: str
    partition: int
    offset: int


@dataclass
class Sender:
    """Produces records and counts the hostile ones."""

    producer: AIOKafkaProducer
    hostile: list[Sent] = field(default_factory=list)

    async def send(self, topic: str, record: KafkaRecord, partition: int | None = None) -> int:
        meta = await self.producer.send_and_wait(
            topic, record.value, key=record.key, headers=list(record.headers), partition=partition
        )
        return int(meta.partition)

    async def send_hostile(self, topic: str, hostile: Hostile, partition: int) -> Sent:
        rec = hostile.record
        meta = await self.producer.send_and_wait(
            topic, rec.value, key=rec.key, headers=list(rec.headers), partition=partition
        )
        sent = Sent(hostile, topic, int(meta.partition), int(meta.offset))
        self.hostile.append(sent)
        return sent


@asynccontextmanager
async def sender(bootstrap: str) -> AsyncIterator[Sender]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        yield Sender(producer)
    finally:
        await producer.stop()


class Watch:
    """Every record written to some topics from the moment the watch starts."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.records: list[Any] = []

    async def drain(self) -> list[Any]:
        """Poll until every record on the watched topics when called has been read."""
        assignment = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(assignment)

        async def caught_up() -> bool:
            for records in (await self._consumer.getmany(timeout_ms=200)).values():
                self.records.extend(records)
            positions = {tp: await self._consumer.position(tp) for tp in assignment}
            return all(positions[tp] >= ends[tp] for tp in assignment)

        await eventually(caught_up, timeout=30, interval=0, what="the watched topics' end")
        return self.records

    def letters(self) -> list[Any]:
        return [r for r in self.records if r.topic == Topic.DEAD_LETTER]

    def on(self, topic: str, keys: set[bytes]) -> list[Any]:
        return [r for r in self.records if r.topic == topic and r.key in keys]


@asynccontextmanager
async def watch(bootstrap: str, topics: Sequence[str]) -> AsyncIterator[Watch]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # partitions_for_topic reads the cache
        assignment = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        assert assignment, f"none of {topics} exists"
        consumer.assign(assignment)
        await consumer.seek_to_end(*assignment)
        for tp in assignment:
            await consumer.position(tp)
        yield Watch(consumer)
    finally:
        await consumer.stop()


def letter_for(letters: Sequence[Any], sent: Sent, group: str) -> Any | None:
    """The dead letter `group` wrote for the sent record, if any."""
    for letter in letters:
        headers = dict(letter.headers)
        if (
            headers.get(DeadLetterHeaders.TOPIC) == sent.topic.encode()
            and headers.get(DeadLetterHeaders.PARTITION) == str(sent.partition).encode()
            and headers.get(DeadLetterHeaders.OFFSET) == str(sent.offset).encode()
            and headers.get(DeadLetterHeaders.GROUP) == group.encode()
        ):
            return letter
    return None


async def caught_up(bootstrap: str, groups: dict[str, str], topic: str) -> None:
    """Until each group (service name -> used name) has committed everything on `topic`: the
    consumers commit a batch once every record of it is applied or dead-lettered."""

    async def lags() -> dict[str, int]:
        return {g: await group_lag(bootstrap, used, topic) for g, used in groups.items()}

    await eventually(
        lags, until=lambda ls: not any(ls.values()), timeout=40, interval=0.2,
        what=f"the consumer groups of {topic} to catch up",
    )  # fmt: skip


def check_letters(
    letters: Sequence[Any], sent: Sequence[Sent], groups: dict[str, str]
) -> list[str]:
    """Problems: a missing letter, a reason without its fragment, a letter that should not be,
    a changed copy (other than cut to fit, with dlq-truncated saying the original size)."""
    problems = []
    for item in sent:
        for service_group, used in groups.items():
            letter = letter_for(letters, item, used)
            expected = item.hostile.reasons.get(service_group)
            label = f"{item.topic} {item.hostile.name!r} / {service_group}"
            if expected is None:
                if letter is not None:
                    problems.append(f"{label}: dead-lettered, expected left alone")
                continue
            if letter is None:
                problems.append(f"{label}: no dead letter")
                continue
            headers = dict(letter.headers)
            reason = headers.get(DeadLetterHeaders.ERROR, b"").decode(errors="replace")
            if expected not in reason:
                problems.append(f"{label}: reason {reason!r} lacks {expected!r}")
            original = item.hostile.record
            if DeadLetterHeaders.TRUNCATED in headers:
                size = (
                    len(original.value or b"")
                    + len(original.key or b"")
                    + sum(len(k) + len(v) for k, v in original.headers)
                )
                # Once an earlier test in the process instrumented aiokafka, the test's own
                # producer adds a `traceparent` header (55 characters) to what it sends.
                sizes = {size, size + len("traceparent") + 55}
                if int(headers[DeadLetterHeaders.TRUNCATED]) not in sizes or not (
                    original.value.startswith(letter.value)
                ):
                    problems.append(f"{label}: truncated copy is not a prefix of the original")
            elif letter.value != original.value or letter.key != original.key:
                problems.append(f"{label}: the copy is not the original bytes")
    return problems


async def documents(database: Any, needles: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Every document of every collection of `database` whose JSON mentions one of `needles`
    (the run's ids), by collection and _id: what a hostile record must not change."""
    wanted = [n for n in needles if n]
    found: dict[str, dict[str, Any]] = {}
    for name in sorted(await database.list_collection_names()):
        for doc in await database[name].find({}).to_list():
            text = json.dumps(doc, default=str, sort_keys=True)
            if any(n in text for n in wanted):
                found.setdefault(name, {})[str(doc["_id"])] = json.loads(text)
    return found


def _quiet(found: dict[str, dict[str, Any]]) -> bool:
    """No outbox entry waits for the relay (removing it would change the document later)."""
    return all(not doc.get("outbox") for docs in found.values() for doc in docs.values())


async def settled(
    database: Any, needles: Iterable[str], until: Any = bool, *, what: str
) -> dict[str, dict[str, Any]]:
    """`documents` once `until` holds for them and the relay has published their events."""
    wanted = list(needles)
    return await eventually(
        lambda: documents(database, wanted), until=lambda f: until(f) and _quiet(f),
        timeout=40, interval=0.2, what=what,
    )  # fmt: skip
