"""Replaying dead letters on the real broker: the matching letters go back to their source topic
as they were (key, value, headers without `dlq-*`); others, cut copies and a dry run publish
nothing; letters written after the run started are not replayed by it."""

from __future__ import annotations

import io

import pytest

from shared.bus.kafka import KafkaBus
from shared.bus.port import DeadLetterHeaders, TopicSpec
from shared.bus.replay import LetterFilter, Replay, Skip, replay_dead_letters, replay_of
from shared.contracts import Topic
from shared.contracts.codec import KafkaRecord
from tests.support.kafka import tail

pytestmark = pytest.mark.infra


def letter(source: str, group: str, error: str, value: bytes, **extra: bytes) -> KafkaRecord:
    headers = (
        ("ce_id", value),
        (DeadLetterHeaders.ERROR, error.encode()),
        (DeadLetterHeaders.TOPIC, source.encode()),
        (DeadLetterHeaders.PARTITION, b"0"),
        (DeadLetterHeaders.OFFSET, b"7"),
        (DeadLetterHeaders.GROUP, group.encode()),
        *extra.items(),
    )
    return KafkaRecord(key=b"ticket-1", value=value, headers=headers)


def test_a_letter_comes_back_as_the_original_and_a_cut_copy_does_not() -> None:
    original = letter("itsm.incidents.events.v1", "sla", "unknown incident event type", b"v")
    assert replay_of(original.key, original.value, original.headers) == Replay(
        "itsm.incidents.events.v1", b"ticket-1", b"v", (("ce_id", b"v"),)
    )
    cut = letter("t", "g", "e", b"v", **{DeadLetterHeaders.TRUNCATED: b"1200000"})
    assert isinstance(replay_of(cut.key, cut.value, cut.headers), Skip)
    assert LetterFilter(group="sla", error="unknown").matches(original.headers)
    assert not LetterFilter(group="notify").matches(original.headers)


async def test_matching_dead_letters_are_put_back_on_their_source_topic(
    kafka_bus: KafkaBus, kafka_bootstrap: str, unique: str
) -> None:
    source = f"test.{unique}.replay-source"
    await kafka_bus.ensure_topics([TopicSpec(source, 1), TopicSpec(str(Topic.DEAD_LETTER), 3)])
    group = f"replay-{unique}"  # letters of earlier runs on the shared broker never match it
    wanted = [letter(source, group, "unknown incident event type v2", f"v{i}".encode()) for i in range(3)]  # fmt: skip
    other_group = letter(source, f"{group}-other", "unknown incident event type v2", b"x")
    cut = letter(source, group, "unknown incident event type v2", b"cut", **{DeadLetterHeaders.TRUNCATED: b"2000000"})  # fmt: skip
    for record in [*wanted, other_group, cut]:
        await kafka_bus.publish_record(str(Topic.DEAD_LETTER), record)

    async with tail(kafka_bootstrap, source) as records:
        dry = await replay_dead_letters(
            kafka_bootstrap, LetterFilter(source_topic=source, group=group), dry_run=True, out=io.StringIO()
        )  # fmt: skip
        assert (dry.replayed, dry.skipped) == (3, 1)
        report = await replay_dead_letters(
            kafka_bootstrap, LetterFilter(source_topic=source, group=group, error="v2"), out=io.StringIO()
        )  # fmt: skip
        assert (report.replayed, report.skipped) == (3, 1)  # the cut copy is listed, not sent
        back = await records.collect(lambda rs: len(rs) >= 3, what="the replayed letters")

    assert sorted(r.value for r in back) == [
        b"v0",
        b"v1",
        b"v2",
    ]  # once each: the dry run sent none
    for record in back:
        assert record.key == b"ticket-1"
        names = [k for k, _ in record.headers]
        assert "ce_id" in names  # the original's headers, and none of the dlq-* ones
        assert not [k for k in names if k.startswith("dlq-")], names
