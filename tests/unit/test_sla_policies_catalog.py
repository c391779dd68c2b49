"""Managed policy versions in front of the built-in catalog: effective_from, retirement,
calendar versions, arrival order; and what the engine does with them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.sla.domain import apply, new_state
from services.sla.policies import model
from services.sla.policies.catalog import ManagedCatalog, PolicyLog
from services.sla.policies.model import CalendarSpec, PolicySpec, Selector
from services.sla.processor.catalog import default_catalog
from shared.contracts.incidents import IncidentCreated, IncidentStatusChanged
from shared.contracts.registry import EventData
from shared.contracts.sla_policies import Holiday
from shared.errors import Conflict, Invalid

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
H = timedelta(hours=1)
OFFICE = CalendarSpec(
    "Berlin office", "Europe/Berlin", {d: ["08:00-17:00"] for d in ("mon", "tue")}
)


def sla_spec(priority: str = "P1", service: str | None = None, resolution: float = 2) -> PolicySpec:
    return PolicySpec(
        name=f"{priority} {service or 'all'}",
        selector=Selector("sla", "incident", priority, service),  # type: ignore[arg-type]
        calendar_id="office",
        first_response=H / 2,
        resolution=H * resolution,
    )


class Topic:
    """The versions as the API publishes them, read into a PolicyLog in any order."""

    def __init__(self) -> None:
        self.events: list[EventData] = []

    def log(self, order: slice = slice(None)) -> PolicyLog:
        versions = PolicyLog(default_catalog())
        for event in self.events[order]:
            assert versions.add(event.event_type, event.model_dump(mode="json"))
        return versions

    def calendar(self, spec: CalendarSpec = OFFICE, at: datetime = T0) -> model.CalendarVersion:
        calendar, events = model.create_calendar(
            "office", spec, effective_from=None, actor="a", now=at
        )
        self.events += events
        return calendar

    def policy(self, policy_id: str, spec: PolicySpec, at: datetime = T0) -> model.PolicyVersion:
        policy, events = model.create_policy(
            policy_id, spec, effective_from=None, actor="a", now=at
        )
        self.events += events
        return policy


def test_a_managed_policy_replaces_the_default_from_its_effective_from_only() -> None:
    topic = Topic()
    topic.calendar()
    topic.policy("p1-incidents", sla_spec())
    catalog = topic.log().catalog()

    before = catalog.sla_policy("incident", "P1", None, None, at=T0 - H)
    after = catalog.sla_policy("incident", "P1", None, None, at=T0)
    assert before is not None and before.id == "default-incident-p1"  # replays keep the past
    assert after is not None and (after.id, after.version) == ("p1-incidents", 1)
    assert after.resolution == 2 * H and after.calendar.name == "office"
    assert after.calendar.zone == "Europe/Berlin"
    # Other priorities are still measured by the built-in policies.
    p2 = catalog.sla_policy("incident", "P2", None, None, at=T0)
    assert p2 is not None and p2.id == "default-incident-p2"


def test_the_most_specific_managed_policy_wins() -> None:
    topic = Topic()
    topic.calendar()
    topic.policy("p1", sla_spec())
    topic.policy("p1-mail", sla_spec(service="mail", resolution=1))
    catalog = topic.log().catalog()
    mail = catalog.sla_policy("incident", "P1", "mail", "network", at=T0)
    web = catalog.sla_policy("incident", "P1", "web", None, at=T0)
    assert mail is not None and mail.id == "p1-mail"
    assert web is not None and web.id == "p1"


def test_a_new_version_applies_from_its_effective_from_and_retirement_hands_back() -> None:
    topic = Topic()
    topic.calendar()
    v1 = topic.policy("p1", sla_spec())
    v2, events = model.revise_policy(
        v1, sla_spec(resolution=4), effective_from=T0 + 24 * H, actor="a", now=T0 + H
    )
    topic.events += events
    v3, events = model.retire_policy(v2, effective_from=T0 + 48 * H, actor="a", now=T0 + 2 * H)
    topic.events += events
    catalog = topic.log().catalog()

    def chosen(at: datetime) -> tuple[str, int]:
        policy = catalog.sla_policy("incident", "P1", None, None, at=at)
        assert policy is not None
        return policy.id, policy.version

    assert chosen(T0 + 23 * H) == ("p1", 1)
    assert chosen(T0 + 24 * H) == ("p1", 2)
    assert chosen(T0 + 48 * H) == ("default-incident-p1", 1)
    assert catalog.version("p1", 2).resolution == 4 * H  # type: ignore[union-attr]
    assert v3.retired and v3.version == 3


def test_a_policy_is_measured_on_the_calendar_version_in_force() -> None:
    topic = Topic()
    v1 = topic.calendar()
    topic.policy("p1", sla_spec())
    christmas = CalendarSpec(
        OFFICE.name, OFFICE.time_zone, OFFICE.hours, (Holiday(date=date(2026, 12, 25)),)
    )
    _, events = model.revise_calendar(v1, christmas, effective_from=T0 + H, actor="a", now=T0)
    topic.events += events
    catalog = topic.log().catalog()
    early = catalog.sla_policy("incident", "P1", None, None, at=T0)
    late = catalog.sla_policy("incident", "P1", None, None, at=T0 + H)
    assert early is not None and early.calendar.holidays == frozenset()
    assert late is not None and late.calendar.holidays == {date(2026, 12, 25)}


def test_arrival_order_and_redelivery_do_not_matter() -> None:
    topic = Topic()
    topic.calendar()
    topic.policy("p1", sla_spec())
    in_order = topic.log().catalog()
    policy_first = PolicyLog(default_catalog())
    for event in [*reversed(topic.events), *topic.events]:  # the policy before its calendar
        policy_first.add(event.event_type, event.model_dump(mode="json"))
    assert policy_first.catalog() == in_order
    assert len(policy_first) == 2


def test_a_policy_whose_calendar_has_not_arrived_yet_is_left_out() -> None:
    topic = Topic()
    topic.calendar()
    topic.policy("p1", sla_spec())
    catalog = topic.log(slice(1, None)).catalog()  # the policy only
    chosen = catalog.sla_policy("incident", "P1", None, None, at=T0)
    assert chosen is not None and chosen.id == "default-incident-p1"


def test_an_incident_is_measured_by_the_version_in_force_when_it_opened() -> None:
    topic = Topic()
    topic.calendar(
        CalendarSpec(
            "always",
            "UTC",
            {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        )
    )
    v1 = topic.policy("p1", sla_spec())
    before = topic.log().catalog()
    _, events = model.revise_policy(
        v1, sla_spec(resolution=8), effective_from=T0 + H, actor="a", now=T0
    )
    topic.events += events
    after = topic.log().catalog()

    opened = IncidentCreated(
        incident_id="INC-1", actor="rita", status="new", number="INC0000001", title="Mail down",
        requester="rita", impact=1, urgency=1, priority="P1", opened_at=T0,
    )  # fmt: skip
    state, facts = apply(new_state("INC-1"), opened, at=T0, catalog=before, sequence=1)
    [resolution] = [f for f in facts if f.metric == "resolution"]
    assert (resolution.policy_id, resolution.policy_version) == ("p1", 1)
    assert resolution.target_seconds == 2 * 3600
    # The new version reaches this worker: the running timer keeps the version it started with.
    moved = IncidentStatusChanged(
        incident_id="INC-1", actor="ann", status="in_progress", previous_status="new"
    )
    state, _ = apply(state, moved, at=T0 + 2 * H, catalog=after, sequence=2)
    timer = state.timer("resolution")
    assert timer is not None and timer.target.policy.version == 1
    # A ticket opened after its effective_from gets it.
    _, facts = apply(
        new_state("INC-2"),
        opened.model_copy(update={"incident_id": "INC-2", "opened_at": T0 + 2 * H}),
        at=T0 + 2 * H,
        catalog=after,
        sequence=1,
    )
    [resolution] = [f for f in facts if f.metric == "resolution"]
    assert (resolution.policy_version, resolution.target_seconds) == (2, 8 * 3600)


def test_versions_apply_in_order_and_never_from_the_past() -> None:
    v1 = Topic().policy("p1", sla_spec())
    with pytest.raises(Invalid, match="in the past"):
        model.create_policy("p2", sla_spec("P2"), effective_from=T0 - H, actor="a", now=T0)
    later, _ = model.revise_policy(v1, sla_spec(), effective_from=T0 + 5 * H, actor="a", now=T0)
    with pytest.raises(Invalid, match="before the current version"):
        model.revise_policy(later, sla_spec(), effective_from=T0 + H, actor="a", now=T0)


def test_retired_is_final() -> None:
    v1 = Topic().policy("p1", sla_spec())
    retired, _ = model.retire_policy(v1, effective_from=None, actor="a", now=T0)
    with pytest.raises(Conflict, match="retired") as refused:
        model.revise_policy(retired, sla_spec(), effective_from=None, actor="a", now=T0)
    assert refused.value.details == {"current_status": "retired", "allowed_actions": []}


def test_one_selector_one_policy_at_a_time() -> None:
    v1 = Topic().policy("p1", sla_spec())
    with pytest.raises(Invalid, match="p1 already covers SLA ticket_type=incident, priority=P1"):
        model.create_policy(
            "p1-bis", sla_spec(), effective_from=None, actor="a", now=T0, same_selector=[v1]
        )
    # Retired from T0 + 2h: another policy may take the selector from then on, not before.
    retired, _ = model.retire_policy(v1, effective_from=T0 + 2 * H, actor="a", now=T0)
    with pytest.raises(Invalid, match="already covers"):
        model.create_policy(
            "p1-bis", sla_spec(), effective_from=T0 + H, actor="a", now=T0, same_selector=[retired]
        )
    taken, _ = model.create_policy(
        "p1-bis", sla_spec(), effective_from=T0 + 2 * H, actor="a", now=T0, same_selector=[retired]
    )
    assert taken.version == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (PolicySpec("x", Selector("sla", "incident"), "office", H), "ticket_type and a priority"),
        (
            PolicySpec("x", Selector("sla", "incident", "P1"), "office"),
            "first_response or a resolution",
        ),
        (PolicySpec("x", Selector("ola"), "office", target=H), "assignment group"),
        (PolicySpec("x", Selector("ola", group="net"), "office", resolution=H), "not SLA targets"),
        (
            PolicySpec("x", Selector("sla", "incident", "P1"), "office", H, warnings=(80, 50)),
            "increasing",
        ),
        (
            PolicySpec("x", Selector("sla", "incident", "P1"), "office", H, warnings=(50, 100)),
            "between 1 and 99",
        ),
        (PolicySpec("x", Selector("sla", "incident", "P1"), "office", -H), "must be positive"),
    ],
)
def test_ill_formed_policies_are_refused_with_the_reason(spec: PolicySpec, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        model.create_policy("x", spec, effective_from=None, actor="a", now=T0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            CalendarSpec("c", "Mars/Olympus", {"mon": ["08:00-17:00"]}),
            "unknown time zone 'Mars/Olympus'",
        ),
        (CalendarSpec("c", "UTC", {"mon": ["08:00-12:00", "11:00-17:00"]}), "non-overlapping"),
        (CalendarSpec("c", "UTC", {"mon": ["8 to 5"]}), "must look like 08:00-17:00"),
        (CalendarSpec("c", "UTC", {"mon": ["08:00-25:00"]}), "not a time of day"),
        (CalendarSpec("c", "UTC", {}), "no working hours"),
        (
            CalendarSpec(
                "c", "UTC", {"mon": ["08:00-17:00"]}, (Holiday(date=date(2026, 1, 1)),) * 2
            ),
            "listed twice",
        ),
    ],
)
def test_ill_formed_calendars_are_refused_with_the_reason(spec: CalendarSpec, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        model.create_calendar("c", spec, effective_from=None, actor="a", now=T0)


def test_the_managed_catalog_is_a_policy_catalog() -> None:
    catalog = ManagedCatalog()
    assert catalog.sla_policy("incident", "P1", None, None, at=T0) is None
