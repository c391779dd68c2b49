"""The table's SlaState encoding: exact round trips (through JSON text, as the changelog stores
them) for every state a generated ticket history passes through, and the table value around it:
the compact format 2 with targets as catalog references, and format 1 still read."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from services.sla.domain import SlaState, TicketEvent, apply, due_alerts, new_state, next_wakeup
from services.sla.policies.catalog import ManagedCatalog
from services.sla.policies.model import CalendarSpec, revise_calendar
from services.sla.processor.catalog import default_catalog
from services.sla.processor.codec import (
    LEGACY_FORMAT,
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
from services.sla.processor.targets import TargetRefs
from tests.faust.events import created
from tests.unit.test_sla_policies_catalog import OFFICE, Topic, sla_spec
from tests.unit.test_sla_properties import BERLIN, CATALOG, histories

REFS = TargetRefs(CATALOG)


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
        for refs in (REFS, None):  # targets as references, and stored whole
            value = json.loads(json.dumps(to_table_value(state, 3, refs, {"view": None})))
            assert_exact(from_table_value(value, REFS), state)
            assert stored(value).partition == 3
            assert stored(value).wakeup == next_wakeup(state)
        # Format 1, as the first release stored it, still loads.
        legacy = legacy_value(state, partition=3)
        assert_exact(from_table_value(json.loads(json.dumps(legacy)), REFS), state)
        assert stored(legacy) == stored(value)


def legacy_value(state: SlaState, partition: int) -> dict[str, Any]:
    wakeup = next_wakeup(state)
    return {
        "v": LEGACY_FORMAT,
        "partition": partition,
        "wakeup": None if wakeup is None else instant(wakeup),
        "state": state_to_doc(state),
    }


def opened_ticket(catalog: Any, ticket_id: str = "INC-1", **fields: Any) -> SlaState:
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    state, _ = apply(new_state(ticket_id), created(ticket_id, at, **fields), at=at, catalog=catalog)
    return state


def test_targets_are_stored_as_references_to_the_catalog_not_as_copies() -> None:
    catalog = default_catalog()
    state = opened_ticket(catalog)
    value = to_table_value(state, 0, TargetRefs(catalog))

    assert '"week"' not in value and "24x7" not in value  # no calendar, no policy name
    assert '["default-incident-p1",1,"f",900000000,0]' in value
    assert len(value.encode()) < 700  # format 1: about 2,000 bytes
    assert len(json.dumps(legacy_value(state, 0)).encode()) > 1900
    assert_exact(from_table_value(value, TargetRefs(default_catalog())), state)  # another worker


def test_a_managed_policy_keeps_its_calendar_version_after_a_new_one_arrives() -> None:
    topic = Topic()
    topic.calendar()
    topic.policy("p1-office", sla_spec("P1"))
    catalog = topic.log().catalog()
    assert isinstance(catalog, ManagedCatalog)
    state = opened_ticket(catalog)
    assert state.timers[0].target.policy.id == "p1-office"
    value = to_table_value(state, 0, TargetRefs(catalog))
    assert '["office",1]' in value and "Europe/Berlin" not in value

    # A later calendar version (other hours) does not change the stored timers' calendar.
    [office] = catalog.calendars
    newer = CalendarSpec(OFFICE.name, OFFICE.time_zone, {"mon": ["09:00-12:00"]})
    _, events = revise_calendar(
        office, newer, effective_from=None, actor="a", now=datetime(2026, 3, 3, tzinfo=UTC)
    )
    topic.events += events
    later = topic.log().catalog()
    assert len(later.calendars) == 2
    assert_exact(from_table_value(value, TargetRefs(later)), state)


def test_a_target_the_catalog_cannot_rebuild_is_stored_whole() -> None:
    catalog = default_catalog()
    state = opened_ticket(catalog)
    other = default_catalog(calendar=BERLIN)  # same ids and versions, another calendar
    value = to_table_value(state, 0, TargetRefs(other))

    assert '"week"' in value  # whole: a reference would rebuild the Berlin calendar
    assert_exact(from_table_value(value, TargetRefs(other)), state)


def test_a_reference_the_catalog_lacks_is_refused_clearly() -> None:
    value = to_table_value(opened_ticket(default_catalog()), 0, TargetRefs(default_catalog()))
    with pytest.raises(StateFormatError, match="no policy 'default-incident-p1' version 1"):
        from_table_value(value, REFS)
    with pytest.raises(StateFormatError, match="needs the policy catalog"):
        from_table_value(value)


def test_a_calendar_with_holidays_and_split_days_round_trips() -> None:
    doc = json.loads(json.dumps(calendar_to_doc(BERLIN)))
    assert calendar_from_doc(doc) == BERLIN
    assert doc["holidays"] == [date(2026, 3, 30).isoformat()]


def test_values_in_another_format_are_refused_clearly() -> None:
    state = new_state("INC-1")
    value = to_table_value(state, partition=0)
    with pytest.raises(StateFormatError, match="format '3'"):
        from_table_value("3" + value[1:])
    with pytest.raises(StateFormatError, match="unreadable SLA state"):
        from_table_value(value.replace('["INC-1"', '["INC-1",1'))
    legacy = legacy_value(state, partition=0)
    with pytest.raises(StateFormatError, match="format 7"):
        from_table_value({**legacy, "v": 7})
    with pytest.raises(StateFormatError, match="unreadable SLA state"):
        from_table_value({**legacy, "state": {"ticket_id": "INC-1"}})


def test_due_records_round_trip() -> None:
    now = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)
    due = Due(("INC-1", "INC-2"), now)
    assert Due.from_doc(json.loads(json.dumps(due.to_doc()))) == due
    # One ticket per record, as the first release sent them.
    assert Due.from_doc({"ticket_id": "INC-1", "now": instant(now)}) == Due(("INC-1",), now)
    with pytest.raises(StateFormatError):
        Due.from_doc({"ticket_id": "INC-1", "now": "yesterday"})
    with pytest.raises(StateFormatError):
        Due.from_doc({"tickets": [], "now": instant(now)})


def test_instants_are_stored_as_utc_and_naive_ones_refused() -> None:
    berlin = datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2)))
    assert instant(berlin) == "2026-03-29T01:30:00.000000+00:00"
    assert parse_instant(instant(berlin)) == berlin
    assert parse_instant(instant(berlin)).utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        instant(datetime(2026, 3, 29, 3, 30))
