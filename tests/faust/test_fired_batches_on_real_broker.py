"""The firing's batch send (`FaustSink.queue_batch`, services/sla/processor/publishing.py) on
the real local broker: every record lands on the partition a plain send of its key picks (so a
ticket's prepared alerts and its other facts share a partition), in the order given, across
more records than one producer batch holds."""

from __future__ import annotations

import json
import os

import pytest
from aiokafka import AIOKafkaProducer

from services.sla.processor.publishing import FaustSink
from shared.contracts.codec import KafkaRecord
from shared.contracts.topics import Topic
from shared.ids import uuid7
from tests.support.kafka import tail

pytestmark = [pytest.mark.infra, pytest.mark.timeout(60)]

KEYS, PER_KEY = 40, 50  # 2,000 records of ~700 bytes: about 90 producer batches of 16 KiB


async def test_batched_records_land_on_their_keys_partitions_in_order() -> None:
    bootstrap = os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    run = uuid7()[-12:]
    keys = [f"fired-{run}-{k}".encode() for k in range(KEYS)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        async with tail(bootstrap, Topic.SLA) as sla:
            plain = {key: (await producer.send_and_wait(Topic.SLA, b"{}", key=key)).partition
                     for key in keys}  # fmt: skip
            records = [
                (KafkaRecord(key, json.dumps({"n": n, "pad": "x" * 640}).encode(),
                             (("ce_sequence", str(n).encode()),)), None)
                for n in range(PER_KEY) for key in keys
            ]  # fmt: skip
            deliveries = await FaustSink({}, producer=lambda: producer).queue_batch(
                Topic.SLA, records
            )
            assert len(deliveries) == len(set(plain.values()))  # one per partition
            for delivery in deliveries:
                await delivery

            def batched(seen: list) -> list:
                return [r for r in seen if r.key in plain and r.value != b"{}"]

            got = batched(await sla.collect(lambda seen: len(batched(seen)) == KEYS * PER_KEY))
    finally:
        await producer.stop()

    for key in keys:
        mine = [r for r in got if r.key == key]
        assert {r.partition for r in mine} == {plain[key]}
        assert [json.loads(r.value)["n"] for r in mine] == list(range(PER_KEY))
        assert [dict(r.headers)["ce_sequence"] for r in mine] == [
            str(n).encode() for n in range(PER_KEY)
        ]
