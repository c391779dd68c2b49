"""The bus port's semantics, asserted identically on the real Kafka broker and the in-memory
adapter: per-key ordering across partitions, dead-lettering without blocking, retries,
committed offsets."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from shared.bus.memory import InMemoryBus
from shared.bus.port import Bus, DeadLetterHeaders, PermanentEventError, TopicSpec, TransientError
from shared.bus.topics import platform_topics
from shared.contracts import Envelope, Topic
from shared.contracts.codec import KafkaRecord, encode
from tests.support.polling import eventually

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def event(key: str, sequence: int, **data: object) -> Envelope:
    return Envelope(
        type="itsm.test.happened.v1",
        source="/tests",
        subject=key,
        sequence=sequence,
        data={"n": sequence, **data},
        time=NOW,
    )


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.infra)])
async def bus(request: pytest.FixtureRequest, kafka_bootstrap: str) -> AsyncIterator[Bus]:
    if request.param == "memory":
        memory = InMemoryBus()
        yield memory
        await memory.stop()
        return
    from shared.bus.kafka import KafkaBus

    kafka = KafkaBus(kafka_bootstrap, client_id="bus-contract", start_timeout=10)
    await kafka.start()
    await kafka.ensure_topics(platform_topics(3))
    yield kafka
    await kafka.stop()


async def new_topic(bus: Bus, unique: str, partitions: int) -> str:
    name = f"test.{unique}.p{partitions}"
    await bus.ensure_topics([TopicSpec(name, partitions)])
    return name


async def test_each_keys_events_arrive_in_order_across_partitions(bus: Bus, unique: str) -> None:
    topic = await new_topic(bus, unique, 6)
    keys = [f"ticket-{i}" for i in range(12)]
    for sequence in range(1, 31):  # interleaved: every key's n-th event, then the (n+1)-th
        await bus.publish(topic, [event(k, sequence) for k in keys])
    seen: dict[str, list[int]] = defaultdict(list)

    async def handler(envelope: Envelope) -> None:
        seen[envelope.subject].append(envelope.sequence)

    sub = await bus.subscribe(f"g-{unique}", [topic], handler)
    await eventually(
        lambda: _total(seen), until=lambda n: n >= 12 * 30, timeout=60, what="all events"
    )
    await sub.stop()
    assert {k: v for k, v in seen.items()} == {k: list(range(1, 31)) for k in keys}


async def _total(seen: dict[str, list[int]]) -> int:
    return sum(len(v) for v in seen.values())


async def test_a_poison_record_is_dead_lettered_and_the_records_behind_it_are_processed(
    bus: Bus, unique: str
) -> None:
    topic = await new_topic(bus, unique, 1)
    poison = b"\x00 not a cloudevent " + unique.encode()
    await bus.publish(topic, [event("k", 1)])
    await bus.publish_record(topic, KafkaRecord(b"k", poison, (("x-origin", b"test"),)))
    await bus.publish(topic, [event("k", 2), event("k", 3)])
    handled: list[int] = []

    async def handler(envelope: Envelope) -> None:
        handled.append(envelope.sequence)

    sub = await bus.subscribe(f"g-{unique}", [topic], handler)
    await eventually(lambda: _value(handled), until=lambda h: h == [1, 2, 3], what="records")
    await sub.stop()

    dead = await _dead_letters(bus, poison)
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert dead[0].value == poison and dead[0].key == b"k"
    assert b"not a CloudEvent" in headers[DeadLetterHeaders.ERROR]
    assert headers[DeadLetterHeaders.TOPIC] == topic.encode()
    assert headers[DeadLetterHeaders.OFFSET] == b"1"
    assert headers["x-origin"] == b"test"  # original headers are kept


async def _value(x: list) -> list:
    return list(x)


async def _dead_letters(bus: Bus, value: bytes) -> list[KafkaRecord]:
    if isinstance(bus, InMemoryBus):
        return [r for r in bus.records(Topic.DEAD_LETTER) if r.value == value]
    from aiokafka import AIOKafkaConsumer

    from shared.bus.kafka import KafkaBus

    assert isinstance(bus, KafkaBus)
    consumer = AIOKafkaConsumer(
        Topic.DEAD_LETTER,
        bootstrap_servers=bus.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[KafkaRecord] = []
    try:

        async def poll() -> list[KafkaRecord]:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found.extend(
                    KafkaRecord(r.key, r.value, tuple(r.headers))
                    for r in records
                    if r.value == value
                )
            return found

        return await eventually(poll, what="the dead letter")
    finally:
        await consumer.stop()


async def test_transient_failures_are_retried_until_they_succeed(bus: Bus, unique: str) -> None:
    topic = await new_topic(bus, unique, 1)
    await bus.publish(topic, [event("k", 1), event("k", 2)])
    attempts: list[int] = []
    applied: list[int] = []

    async def flaky(envelope: Envelope) -> None:
        attempts.append(envelope.sequence)
        if envelope.sequence == 1 and attempts.count(1) < 8:  # more than max_attempts
            raise TransientError("database away")
        applied.append(envelope.sequence)

    sub = await bus.subscribe(f"g-{unique}", [topic], flaky)
    await eventually(lambda: _value(applied), until=lambda a: a == [1, 2], what="retries")
    await sub.stop()
    assert attempts.count(1) == 8


async def test_a_rejected_event_is_dead_lettered_with_its_reason(bus: Bus, unique: str) -> None:
    topic = await new_topic(bus, unique, 1)
    marker = f"reject-{unique}"
    await bus.publish(topic, [event("k", 1, marker=marker), event("k", 2)])
    applied: list[int] = []

    async def handler(envelope: Envelope) -> None:
        if envelope.data.get("marker"):
            raise PermanentEventError("closed tickets cannot be reassigned")
        applied.append(envelope.sequence)

    sub = await bus.subscribe(f"g-{unique}", [topic], handler)
    await eventually(lambda: _value(applied), until=lambda a: a == [2], what="the next event")
    await sub.stop()
    dead = await _dead_letters(bus, encode(event("k", 1, marker=marker)).value)
    assert b"closed tickets" in dict(dead[0].headers)[DeadLetterHeaders.ERROR]


async def test_a_restarted_consumer_resumes_after_its_committed_offsets(
    bus: Bus, unique: str
) -> None:
    topic = await new_topic(bus, unique, 3)
    group = f"g-{unique}"
    await bus.publish(topic, [event(f"k{i}", 1) for i in range(10)])
    seen: list[str] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(f"{envelope.subject}:{envelope.sequence}")

    sub = await bus.subscribe(group, [topic], handler)
    await eventually(lambda: _value(seen), until=lambda s: len(s) == 10, what="first run")
    await sub.stop()
    await bus.publish(topic, [event(f"k{i}", 2) for i in range(10)])
    seen.clear()
    sub = await bus.subscribe(group, [topic], handler)
    await eventually(lambda: _value(seen), until=lambda s: len(s) >= 10, what="second run")
    await sub.stop()
    assert sorted(seen) == sorted(f"k{i}:2" for i in range(10))


async def test_structured_mode_events_from_external_producers_are_consumed(
    bus: Bus, unique: str
) -> None:
    topic = await new_topic(bus, unique, 1)
    body = {
        "specversion": "1.0",
        "id": f"alert-{unique}",
        "source": "alertmanager",
        "type": "io.prometheus.alert.firing.v1",
        "subject": "fingerprint-1",
        "datacontenttype": "application/json",
        "data": {"alertname": "DiskFull"},
    }
    await bus.publish_record(
        topic,
        KafkaRecord(
            None, json.dumps(body).encode(), (("content-type", b"application/cloudevents+json"),)
        ),
    )
    got: list[Envelope] = []

    async def handler(envelope: Envelope) -> None:
        got.append(envelope)

    sub = await bus.subscribe(f"g-{unique}", [topic], handler)
    await eventually(lambda: _value(got), what="the external event")
    await sub.stop()
    assert got[0].id == f"alert-{unique}" and got[0].data == {"alertname": "DiskFull"}
