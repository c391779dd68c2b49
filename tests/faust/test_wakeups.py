"""The wake-up index: earliest first, replaced entries never fire, unanswered ones come round
again, and revoked partitions are forgotten."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.sla.processor.wakeups import Wakeup, WakeupIndex

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
S = timedelta(seconds=1)
RETRY = 5 * S


def test_due_entries_come_out_earliest_first_and_come_round_again_unless_rescheduled() -> None:
    index = WakeupIndex()
    index.schedule("b", 1, T0 + 2 * S)
    index.schedule("a", 0, T0 + 1 * S)
    index.schedule("c", 2, T0 + 9 * S)

    assert index.pop_due(T0, retry_after=RETRY) == []
    assert [w.ticket_id for w in index.pop_due(T0 + 3 * S, retry_after=RETRY)] == ["a", "b"]
    assert index.get("a") == Wakeup("a", 0, T0 + 8 * S)  # moved by the retry delay

    index.schedule("a", 0, T0 + 60 * S)  # the due record was applied: the real next wake-up
    due = index.pop_due(T0 + 10 * S, retry_after=RETRY)
    assert [w.ticket_id for w in due] == ["b", "c"]  # b came round again, a did not


def test_replaced_and_cleared_entries_never_fire() -> None:
    index = WakeupIndex()
    index.schedule("a", 0, T0)
    index.schedule("a", 0, T0 + 5 * S)
    index.schedule("b", 0, T0)
    index.schedule("b", 0, None)
    index.schedule("c", 0, T0)
    index.schedule("c", 0, None)
    index.schedule("c", 0, T0)  # back at the same instant: one entry, not two

    assert [w.ticket_id for w in index.pop_due(T0 + S, retry_after=RETRY)] == ["c"]
    assert len(index) == 2 and "b" not in index


def test_revoked_partitions_are_forgotten_and_the_heap_stays_small() -> None:
    index = WakeupIndex()
    for i in range(1000):
        index.schedule(f"t{i}", i % 6, T0 + i * S)
        index.schedule(f"t{i}", i % 6, T0 + (i + 1) * S)
    index.forget({0, 1})
    index.retain({2, 3, 4})

    assert {w.partition for w in index.pop_due(T0 + 2000 * S, retry_after=RETRY)} == {2, 3, 4}
    assert len(index._heap) <= 2 * len(index) + 64


def test_entries_due_within_the_window_ahead_come_out_and_retry_past_their_instant() -> None:
    index = WakeupIndex()
    index.schedule("due", 0, T0 - S)
    index.schedule("soon", 1, T0 + 8 * S)
    index.schedule("later", 2, T0 + 11 * S)

    due = index.pop_due(T0, retry_after=RETRY, ahead=10 * S)

    assert [(w.ticket_id, w.at) for w in due] == [("due", T0 - S), ("soon", T0 + 8 * S)]
    assert index.get("due") == Wakeup("due", 0, T0 + RETRY)  # past now
    assert index.get("soon") == Wakeup("soon", 1, T0 + 8 * S + RETRY)  # past its instant
    # each once, although their retries (at 10, 16 and 18 s) fall inside this window again
    again = index.pop_due(T0, retry_after=RETRY, ahead=20 * S)
    assert [w.ticket_id for w in again] == ["due", "later", "soon"]
