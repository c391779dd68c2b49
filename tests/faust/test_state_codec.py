"""The table's SlaState encoding: exact round trips (through JSON text, as the changelog stores
them) for every state a generated ticket history passes through, and the table value around it."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from services.sla.domain import SlaState, TicketEvent, apply, due_alerts, new_state, next_wakeup
from services.sla.processor.codec import (
    Due,
    StateFormatError,
    calendar_from_doc,
    calendar_to_doc,
    from_table_value,
    instant,
    parse_instant,
    state_from_doc,
    state_to_doc,
    stored,
    to_table_value,
)
from tests.unit.test_sla_properties import BERLIN, CATALOG, histories


def through_json(state: SlaState) -> SlaState:
    return state_from_doc(json.loads(json.dumps(state_to_doc(state))))


def canonical(value: Any) -> Any:
    """Every field, recursively, with each instant's zone object and sets in a stable order:
    stricter than ==, which compares datetimes by instant only."""
    if is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, [canonical(getattr(value, f.name)) for f in fields(value)])
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), value.tzinfo)
    if isinstance(value, frozenset):
        return ("set", sorted(canonical(v) for v in value))
    if isinstance(value, tuple):
        return ("tuple", [canonical(v) for v in value])
    return (type(value).__name__, value)


def assert_exact(decoded: SlaState, original: SlaState) -> None:
    assert decoded == original
    assert canonical(decoded) == canonical(original)


def states_along(events: list[TicketEvent], until: datetime) -> list[SlaState]:
    state, seen = new_state(events[0].event.incident_id), []
    seen.append(state)
    for item in events:
        state, _ = apply(state, item.event, at=item.at, catalog=CATALOG, sequence=item.sequence)
        seen.append(state)
    state, _ = due_alerts(state, until)
    return [*seen, state]


@settings(
    max_examples=30, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(histories())
def test_every_state_of_a_ticket_history_round_trips_exactly(
    history: tuple[list[TicketEvent], datetime],
) -> None:
    events, until = history
    for state in states_along(events, until):
        assert_exact(through_json(state), state)
        value = json.loads(json.dumps(to_table_value(state, partition=3)))
        assert_exact(from_table_value(value), state)
        assert stored(value).partition == 3
        assert stored(value).wakeup == next_wakeup(state)


def test_a_calendar_with_holidays_and_split_days_round_trips() -> None:
    doc = json.loads(json.dumps(calendar_to_doc(BERLIN)))
    assert calendar_from_doc(doc) == BERLIN
    assert doc["holidays"] == [date(2026, 3, 30).isoformat()]


def test_values_in_another_format_are_refused_clearly() -> None:
    state = new_state("INC-1")
    value = to_table_value(state, partition=0)
    with pytest.raises(StateFormatError, match="format 2"):
        from_table_value({**value, "v": 2})
    with pytest.raises(StateFormatError, match="unreadable SLA state"):
        from_table_value({**value, "state": {"ticket_id": "INC-1"}})


def test_due_records_round_trip() -> None:
    due = Due("INC-1", datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC))
    assert Due.from_doc(json.loads(json.dumps(due.to_doc()))) == due
    with pytest.raises(StateFormatError):
        Due.from_doc({"ticket_id": "INC-1", "now": "yesterday"})


def test_instants_are_stored_as_utc_and_naive_ones_refused() -> None:
    berlin = datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2)))
    assert instant(berlin) == "2026-03-29T01:30:00.000000+00:00"
    assert parse_instant(instant(berlin)) == berlin
    assert parse_instant(instant(berlin)).utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        instant(datetime(2026, 3, 29, 3, 30))
