"""The SLA processor's agents in Faust's test contexts: incident events in, SLA facts out, state
in the table, wake-ups in the index, due records through the timer path, dead letters."""

from __future__ import annotations

import json
from datetime import timedelta

from faust.types import Message

from services.sla.processor import SlaSettings, create_app
from services.sla.processor.codec import from_table_value, stored
from shared.bus.port import DeadLetterHeaders
from shared.contracts.codec import encode
from shared.contracts.envelope import Envelope
from shared.contracts.topics import Topic
from tests.faust.conftest import T0, Harness
from tests.faust.events import created, record, replied

M = timedelta(minutes=1)


async def test_a_created_incident_starts_both_timers_and_publishes_started_facts(
    harness: Harness,
) -> None:
    handled, _ = await harness.put(record(created("INC-1", T0), 1, T0), partition=2)

    assert (handled.outcome, handled.ticket_id) == ("applied", "INC-1")
    facts = harness.sink.facts()
    assert [f.type for f in facts] == ["itsm.sla.started.v1"] * 2
    assert [f.data["metric"] for f in facts] == ["first_response", "resolution"]
    assert [f.sequence for f in facts] == [1, 2]  # the SLA state's counter
    assert {f.subject for f in facts} == {"INC-1"}
    assert {s.record.key for s in harness.sink.on(Topic.SLA)} == {b"INC-1"}  # keyed by ticket
    assert facts[0].data["deadline"] == (T0 + 15 * M).isoformat().replace("+00:00", "Z")

    value = harness.sla.table.get("INC-1")
    state = from_table_value(value, harness.sla.processor.targets)
    assert [(t.metric, t.status) for t in state.timers] == [
        ("first_response", "running"),
        ("resolution", "running"),
    ]
    assert (state.applied_sequence, state.version) == (1, 2)
    # The next wake-up is the first response's 50 % warning, in the partition of the event.
    assert stored(value).partition == 2
    wakeup = harness.sla.index.get("INC-1")
    assert wakeup is not None and (wakeup.partition, wakeup.at) == (2, T0 + 7.5 * M)


async def test_a_redelivered_event_is_skipped(harness: Harness) -> None:
    event = record(created("INC-2", T0), 1, T0)
    await harness.put(event)
    stored_before = harness.sla.table.get("INC-2")

    handled, _ = await harness.put(event)

    assert handled.outcome == "duplicate"
    assert len(harness.sink.facts()) == 2  # the two started facts of the first delivery only
    assert harness.sla.table.get("INC-2") == stored_before


async def test_a_staff_reply_meets_the_first_response(harness: Harness) -> None:
    await harness.put(record(created("INC-3", T0), 1, T0))

    handled, _ = await harness.put(record(replied("INC-3"), 2, T0 + 5 * M))

    assert handled.outcome == "applied"
    [met] = handled.facts
    assert (met.type, met.data["metric"], met.sequence) == ("itsm.sla.met.v1", "first_response", 3)
    assert met.data["elapsed_seconds"] == 300
    state = from_table_value(harness.sla.table.get("INC-3"), harness.sla.processor.targets)
    assert state.timer("first_response").status == "met"  # type: ignore[union-attr]
    # Only the resolution clock is left to wake up for: its 50 % warning after 2 h.
    assert harness.sla.index.get("INC-3").at == T0 + 120 * M  # type: ignore[union-attr]


async def test_an_undecodable_record_is_dead_lettered_and_processing_continues(
    harness: Harness,
) -> None:
    await harness.incidents.put(
        b"\x00not a cloudevent", key=b"INC-4", headers=[("ce_type", b"x")], partition=1
    )
    handled = harness.incidents.results[harness.incidents.processed_offset - 1]

    assert handled.outcome == "dead_lettered"
    [dead] = harness.sink.on(Topic.DEAD_LETTER)
    assert (dead.record.key, dead.record.value) == (b"INC-4", b"\x00not a cloudevent")
    headers = dict(dead.record.headers)
    assert headers[DeadLetterHeaders.ERROR].startswith(b"not a CloudEvent")
    assert headers[DeadLetterHeaders.TOPIC] == Topic.INCIDENTS.encode()
    assert headers[DeadLetterHeaders.PARTITION] == b"1"
    assert headers["ce_type"] == b"x"  # the original headers travel along
    assert harness.sink.facts() == []

    handled, _ = await harness.put(record(created("INC-5", T0), 1, T0))
    assert handled.outcome == "applied"


async def test_an_event_the_engine_refuses_is_dead_lettered(harness: Harness) -> None:
    # A reply keyed by one ticket but about another: valid contract, impossible to apply.
    event = record(replied("INC-6"), 2, T0)
    bad = type(event)(key=b"INC-7", value=event.value, headers=tuple(
        (k, b"INC-7" if k == "ce_subject" else v) for k, v in event.headers
    ))  # fmt: skip

    handled, _ = await harness.put(bad)

    assert handled.outcome == "dead_lettered"
    assert "refused" in (handled.reason or "")


async def test_events_of_other_aggregates_are_ignored(harness: Harness) -> None:
    other = Envelope(
        type="itsm.other.thing.v1", source="/tests", subject="X-1", sequence=1, data={}, time=T0
    )
    handled, _ = await harness.put(encode(other))

    assert handled.outcome == "ignored"
    assert harness.sla.table.get("X-1") is None


async def test_the_timer_sends_due_records_that_emit_warnings_and_the_breach(
    harness: Harness,
) -> None:
    await harness.put(record(created("INC-8", T0), 1, T0), partition=4)
    harness.clock.now = T0 + 7 * M
    assert await harness.tick() == []  # nothing due before 7.5 minutes

    harness.clock.now = T0 + 8 * M
    [handled] = await harness.tick()
    due = harness.sink.on(harness.sla.processor.due_topic)
    assert [(d.record.key, d.partition) for d in due] == [(b"INC-8", 4)]  # the state's partition
    assert [(f.type, f.data["threshold"], f.sequence) for f in handled.facts] == [
        ("itsm.sla.warning.v1", 50, 3)
    ]

    harness.clock.now = T0 + 20 * M  # 75 %, 90 % and 100 % all due: each has its own alert
    [handled] = await harness.tick()
    *warnings, breach = handled.facts
    assert [(w.data["threshold"], w.sequence, w.time) for w in warnings] == [
        (75, 4, T0 + 11.25 * M),
        (90, 5, T0 + 13.5 * M),
    ]
    assert (breach.type, breach.data["metric"], breach.sequence) == (
        "itsm.sla.breached.v1",
        "first_response",
        6,
    )
    assert breach.time == T0 + 15 * M  # stamped with the deadline, not with when it was seen

    # A redelivered due record changes nothing.
    before = len(harness.sink.facts())
    await harness.due.put(due[-1].record.value, key=b"INC-8", partition=4)
    assert len(harness.sink.facts()) == before


async def test_the_index_is_rebuilt_from_the_table_for_owned_partitions(
    harness: Harness,
) -> None:
    await harness.put(record(created("INC-9", T0), 1, T0), partition=0)
    await harness.put(record(created("INC-10", T0, priority="P3"), 1, T0), partition=5)
    expected = {t: harness.sla.index.get(t) for t in ("INC-9", "INC-10")}

    harness.sla.index.rebuild([])  # a worker that just took over knows nothing yet
    assert harness.sla.rearm({5}) == 1
    assert "INC-9" not in harness.sla.index
    assert harness.sla.index.get("INC-10") == expected["INC-10"]

    assert harness.sla.rearm({0, 5}) == 2
    assert harness.sla.index.get("INC-9") == expected["INC-9"]

    harness.sla.index.forget({0})  # partition 0 revoked
    assert "INC-9" not in harness.sla.index and "INC-10" in harness.sla.index


async def test_a_new_worker_recovers_the_state_from_the_changelog_and_rearms(
    harness: Harness,
) -> None:
    """What Faust does on assignment, minus the broker: the changelog records the first app
    wrote are decoded by a second app's changelog topic and applied to its table."""
    await harness.put(record(created("INC-11", T0), 1, T0), partition=3)
    written = harness.sla.table.get("INC-11")

    other = create_app(SlaSettings(app_id="sla-agent-tests", kafka_bootstrap="127.0.0.1:1"))
    changelog = other.sla.table.changelog_topic
    message = Message(
        topic=changelog.get_topic_name(), partition=3, offset=0, timestamp=0.0,
        timestamp_type=0, headers=[], key=json.dumps("INC-11").encode(),
        value=json.dumps(written).encode(), checksum=None,
    )  # fmt: skip
    other.sla.table.apply_changelog_batch([await changelog.decode(message)])

    assert other.sla.table.get("INC-11") == written
    assert other.sla.rearm({3}) == 1
    assert other.sla.index.get("INC-11") == harness.sla.index.get("INC-11")
