"""Escalation policies and timelines with an injected clock: matching (most specific wins),
the transition table, levels firing at their delays, acknowledgement and resolution stopping
them, repeats, exhaustion, versions, idempotent triggers, on-call and quiet hours at firing."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notify.domain import book as books
from services.notify.domain.escalation import (
    TRANSITIONS,
    Escalation,
    InvalidEscalationTransition,
    acknowledge,
    due_levels,
    escalation_id,
    next_status,
    next_wakeup,
    settle,
    start,
    still_wanted,
)
from services.notify.domain.model import (
    EscalationAcknowledged,
    EscalationExhausted,
    EscalationResolved,
    EscalationTriggered,
    LevelNotified,
    Notification,
    Target,
    Trigger,
)
from services.notify.domain.policies import EscalationPolicy, Level, Match, PolicyCatalog, Repeat
from services.notify.domain.quiet_hours import QuietHours
from services.notify.domain.recipients import Directory
from services.notify.domain.rotations import Override, Rotation
from services.notify.domain.triggers import Settlement
from shared.contracts import notify
from shared.contracts.incidents import IncidentClosed, IncidentMajorDeclared, IncidentResolved
from shared.contracts.sla import SlaBreached, SlaMet, SlaWarning
from shared.errors import Conflict, Invalid, NotFound

M = timedelta(minutes=1)
BREACHED = SlaBreached.event_type
WARNING = SlaWarning.event_type
MAJOR = IncidentMajorDeclared.event_type
RESOLVED = IncidentResolved.event_type
CLOSED = IncidentClosed.event_type
T0 = datetime(2026, 3, 16, 10, 0, tzinfo=UTC)  # Monday 11:00 in Berlin

OPS = Rotation(
    id="ops", name="Ops on call", zone="Europe/Berlin", participants=("alice", "bob", "carol"),
    handoff_weekday=0, handoff_time=time(9), starts=date(2026, 3, 2),
)  # fmt: skip  # alice from 2 March 09:00, bob from 9 March, carol from 16 March
DIRECTORY = Directory(groups={"it-managers": ("mia", "max"), "empty": ()}, rotations={"ops": OPS})
LADDER = EscalationPolicy(
    id="sla-breach", version=1, name="SLA breach ladder", match=Match(frozenset({BREACHED})),
    levels=(
        Level(0 * M, (Target.rotation("ops"),), ("email", "slack")),
        Level(15 * M, (Target.user("lead"),), ("email",)),
        Level(30 * M, (Target.group("it-managers"),), ("email", "teams")),
    ),
)  # fmt: skip


def trigger(event_id: str = "evt-1", **changes: Any) -> Trigger:
    fields: dict[str, Any] = dict(
        event_id=event_id, event_type=BREACHED, ticket_id="INC1", priority="P2", occurred_at=T0,
        service="mail", group="service-desk", metric="resolution",
    )  # fmt: skip
    fields.update(changes)
    return Trigger(**fields)


def run(escalation: Escalation, minutes: list[int], directory: Directory = DIRECTORY) -> tuple[
    Escalation, list[tuple[int, str, str, int]], list[Any]
]:  # fmt: skip
    """Wake up at each minute after T0: (minute, recipient, channel, level) of what was sent."""
    sent: list[tuple[int, str, str, int]] = []
    facts: list[Any] = []
    for minute in minutes:
        escalation, notes, happened = due_levels(escalation, T0 + minute * M, directory)
        sent += [(minute, n.recipient, n.channel, n.level or 0) for n in notes]
        facts += happened
    return escalation, sent, facts


# The transition table, cell by cell.

STATUSES = ["triggered", "notified", "acknowledged", "resolved", "exhausted"]
ACTIONS = ["notify", "acknowledge", "resolve", "exhaust"]
EXPECTED = {
    "triggered": {"notify": "notified", "acknowledge": "acknowledged", "resolve": "resolved"},
    "notified": {
        "notify": "notified", "acknowledge": "acknowledged", "resolve": "resolved",
        "exhaust": "exhausted",
    },
    "acknowledged": {"resolve": "resolved"},
    "resolved": {},
    "exhausted": {"acknowledge": "acknowledged", "resolve": "resolved"},
}  # fmt: skip


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", ACTIONS)
def test_transition_table(status: str, action: str) -> None:
    expected = EXPECTED[status].get(action)
    if expected is None:
        with pytest.raises(InvalidEscalationTransition) as refused:
            next_status(status, action)  # type: ignore[arg-type]
        assert refused.value.details["current_status"] == status
        assert action not in refused.value.details["allowed_actions"]  # type: ignore[operator]
    else:
        assert next_status(status, action) == expected  # type: ignore[arg-type]
    assert len(TRANSITIONS) == sum(len(v) for v in EXPECTED.values())


# The timeline.


def test_levels_fire_at_their_delays_to_on_call_then_lead_then_managers() -> None:
    escalation, facts = start(LADDER, trigger(), T0)
    assert escalation.status == "triggered" and next_wakeup(escalation) == T0
    escalation, sent, facts = run(escalation, list(range(0, 46)))
    assert sent == [
        (0, "carol", "email", 1), (0, "carol", "slack", 1),  # carol is on call since 09:00 Monday
        (15, "lead", "email", 2),
        (30, "mia", "email", 3), (30, "mia", "teams", 3),
        (30, "max", "email", 3), (30, "max", "teams", 3),
    ]  # fmt: skip
    assert [type(f) for f in facts] == [LevelNotified] * 3 + [EscalationExhausted]
    assert escalation.status == "exhausted" and next_wakeup(escalation) is None
    assert escalation.notified == ("carol", "lead", "mia", "max")


@pytest.mark.parametrize(
    ("ack_minute", "levels_sent"),
    [(0, [1]), (5, [1]), (14, [1]), (15, [1, 2]), (29, [1, 2]), (45, [1, 2, 3])],
)
def test_acknowledging_stops_further_levels(ack_minute: int, levels_sent: list[int]) -> None:
    escalation, _ = start(LADDER, trigger(), T0)
    escalation, before, _ = run(escalation, list(range(0, ack_minute + 1)))
    if escalation.status == "exhausted":
        escalation, _ = acknowledge(escalation, "mia", T0 + ack_minute * M)
    else:
        escalation, _ = acknowledge(escalation, "carol", T0 + ack_minute * M)
    assert escalation.status == "acknowledged" and next_wakeup(escalation) is None
    escalation, after, _ = run(escalation, list(range(ack_minute, 120)))
    assert after == []
    assert sorted({level for *_, level in before}) == levels_sent
    with pytest.raises(InvalidEscalationTransition):
        acknowledge(escalation, "bob", T0 + 2 * ack_minute * M)


def test_resolving_the_ticket_stops_it_and_a_redelivered_resolution_changes_nothing() -> None:
    escalation, _ = start(LADDER, trigger(), T0)
    escalation, _, _ = run(escalation, [0, 10])
    escalation, facts = settle(escalation, "resolved", RESOLVED, T0 + 12 * M)
    assert escalation.status == "resolved" and facts == [
        EscalationResolved(
            escalation.id, "INC1", "sla-breach", 1, "resolved", RESOLVED, T0 + 12 * M
        )
    ]
    again, more = settle(escalation, "resolved", CLOSED, T0 + 13 * M)
    assert (again, more) == (escalation, [])
    assert run(escalation, list(range(12, 60)))[1] == []
    with pytest.raises(InvalidEscalationTransition):
        acknowledge(escalation, "carol", T0 + 20 * M)


def test_a_late_wakeup_fires_every_due_level_once_and_one_message_per_person_and_channel() -> None:
    policy = replace(
        LADDER, levels=(
            Level(0 * M, (Target.user("lead"),), ("email",)),
            Level(15 * M, (Target.user("lead"), Target.user("boss")), ("email",)),
        ),
    )  # fmt: skip
    escalation, _ = start(policy, trigger(), T0)
    escalation, sent, facts = run(escalation, [40])
    assert sent == [(40, "lead", "email", 2), (40, "boss", "email", 2)]
    assert [(f.level, f.step) for f in facts if isinstance(f, LevelNotified)] == [(1, 1), (2, 2)]
    assert run(escalation, [41, 90])[1] == []


def test_repeat_runs_the_whole_ladder_again_then_exhausts() -> None:
    policy = replace(LADDER, repeat=Repeat(times=2, every=60 * M))
    escalation, _ = start(policy, trigger(), T0)
    escalation, sent, facts = run(escalation, list(range(0, 200, 5)))
    firsts = sorted({(minute, level) for minute, _, _, level in sent})
    assert firsts == [
        (0, 1),
        (15, 2),
        (30, 3),
        (60, 1),
        (75, 2),
        (90, 3),
        (120, 1),
        (135, 2),
        (150, 3),
    ]
    rounds = [(f.round, f.level) for f in facts if isinstance(f, LevelNotified)]
    assert rounds == [(r, lv) for r in (1, 2, 3) for lv in (1, 2, 3)]
    keys = [n for n in facts if isinstance(n, LevelNotified)]
    assert len({f.step for f in keys}) == 9
    assert escalation.status == "exhausted" and isinstance(facts[-1], EscalationExhausted)


def test_a_repeat_round_reaches_the_same_person_again_with_another_dedup_key() -> None:
    policy = replace(LADDER, levels=LADDER.levels[:1], repeat=Repeat(times=1, every=10 * M))
    escalation, _ = start(policy, trigger(), T0)
    _, first, _ = due_levels(escalation, T0, DIRECTORY)
    escalation, _, _ = due_levels(escalation, T0, DIRECTORY)
    _, second, _ = due_levels(escalation, T0 + 10 * M, DIRECTORY)
    assert [n.recipient for n in first] == [n.recipient for n in second] == ["carol", "carol"]
    assert not {n.key for n in first} & {n.key for n in second}


def test_the_rotation_is_resolved_when_the_level_fires_overrides_included() -> None:
    covered = OPS.with_override(Override("dave", T0 + 10 * M, T0 + 20 * M))
    directory = replace(DIRECTORY, rotations={"ops": covered})
    policy = replace(
        LADDER, levels=(Level(0 * M, (Target.rotation("ops"),)), Level(15 * M, (Target.rotation("ops"),)))
    )  # fmt: skip
    escalation, _ = start(policy, trigger(), T0)
    _, sent, _ = run(escalation, [0, 15], directory)
    assert sent == [(0, "carol", "email", 1), (15, "dave", "email", 2)]


def test_unknown_or_empty_targets_are_reported_on_the_level() -> None:
    policy = replace(
        LADDER, levels=(Level(0 * M, (Target.group("empty"), Target.rotation("nope"), Target.user("u"))),)
    )  # fmt: skip
    escalation, _ = start(policy, trigger(), T0)
    _, sent, facts = run(escalation, [0])
    assert sent == [(0, "u", "email", 1)]
    assert facts[0].recipients == ("u",)
    assert facts[0].unresolved == (Target.group("empty"), Target.rotation("nope"))


def test_quiet_hours_defer_non_p1_escalation_messages_and_never_p1() -> None:
    night = QuietHours("Europe/Berlin", time(22), time(7))
    directory = replace(DIRECTORY, quiet_hours={"carol": night})
    at_night = datetime(2026, 3, 16, 23, 30, tzinfo=UTC)  # 00:30 Tuesday in Berlin
    for priority, deliver_at in [
        ("P2", datetime(2026, 3, 17, 6, 0, tzinfo=UTC)),  # 07:00 Berlin (CET)
        ("P1", at_night),
    ]:
        escalation, _ = start(LADDER, trigger(priority=priority), at_night)
        escalation, notes, _ = due_levels(escalation, at_night, directory)
        assert {n.deliver_at for n in notes} == {deliver_at}
        assert all(n.created_at == at_night for n in notes)
        assert all(still_wanted(escalation, n) for n in notes)
        acked, _ = acknowledge(escalation, "lead", at_night + M)
        assert not any(still_wanted(acked, n) for n in notes)  # the deferred mail is dropped


# Policies: matching, specificity, validation, versions.

P_DEFAULT = EscalationPolicy(
    "default", 1, "any breach", Match(frozenset({BREACHED})), LADDER.levels
)
P_P1 = replace(P_DEFAULT, id="p1", match=Match(frozenset({BREACHED}), priorities=frozenset({"P1"})))
P_NOC = replace(P_DEFAULT, id="noc", match=Match(frozenset({BREACHED}), groups=frozenset({"noc"})))
P_MAIL = replace(
    P_DEFAULT, id="mail", match=Match(frozenset({BREACHED, WARNING}), services=frozenset({"mail"}))
)
P_MAIL_NOC = replace(
    P_DEFAULT, id="mail-noc",
    match=Match(frozenset({BREACHED}), services=frozenset({"mail"}), groups=frozenset({"noc"})),
)  # fmt: skip
P_MAJOR = replace(P_DEFAULT, id="major", match=Match(frozenset({MAJOR})))
CATALOG = PolicyCatalog((P_DEFAULT, P_P1, P_NOC, P_MAIL, P_MAIL_NOC, P_MAJOR))


@pytest.mark.parametrize(
    ("event_type", "priority", "service", "group", "expected"),
    [
        (BREACHED, "P3", None, None, "default"),
        (BREACHED, "P1", None, None, "p1"),
        (BREACHED, "P1", None, "noc", "noc"),  # group beats priority
        (BREACHED, "P1", "mail", "noc", "mail-noc"),  # service and group beat all
        (BREACHED, "P3", "mail", "desk", "mail"),  # service beats group
        (WARNING, "P3", "mail", None, "mail"),
        (WARNING, "P1", "web", "noc", None),  # nobody answers warnings for web
        (MAJOR, "P2", "web", None, "major"),
    ],
)
def test_the_most_specific_matching_policy_wins(
    event_type: str, priority: str, service: str | None, group: str | None, expected: str | None
) -> None:
    chosen = CATALOG.select(
        trigger(event_type=event_type, priority=priority, service=service, group=group)
    )
    assert (chosen.id if chosen else None) == expected


@pytest.mark.parametrize(
    "rival",
    [
        replace(P_DEFAULT, id="other"),
        replace(
            P_P1, id="p1-p2", match=Match(frozenset({BREACHED}), priorities=frozenset({"P1", "P2"}))
        ),
        replace(
            P_MAIL,
            id="mail2",
            match=Match(frozenset({WARNING}), services=frozenset({"mail", "web"})),
        ),
    ],
)
def test_an_ambiguous_catalog_is_refused(rival: EscalationPolicy) -> None:
    with pytest.raises(Conflict, match="match the same events"):
        PolicyCatalog((*CATALOG.policies, rival))


def test_disjoint_policies_of_equal_specificity_coexist() -> None:
    p2 = replace(P_P1, id="p2", match=Match(frozenset({BREACHED}), priorities=frozenset({"P2"})))
    catalog = PolicyCatalog((*CATALOG.policies, p2))
    assert catalog.select(trigger(priority="P2", service=None, group=None)).id == "p2"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Match(frozenset()), "must name the event types"),
        (lambda: Match(frozenset({"itsm.sla.started.v1"})), "not event types"),
        (lambda: Level(-M, (Target.user("u"),)), "must not be negative"),
        (lambda: Level(M, ()), "at least one target"),
        (lambda: Level(M, (Target.user("u"),), ("pager",)), "channels"),  # type: ignore[arg-type]
        (lambda: replace(LADDER, levels=()), "1 to 10 levels"),
        (lambda: replace(LADDER, levels=(LADDER.levels[1], LADDER.levels[0])), "must increase"),
        (lambda: replace(LADDER, repeat=Repeat(1, 30 * M)), "after the last level"),
        (lambda: replace(LADDER, repeat=Repeat(0, 60 * M)), "repeat 1 to 9 times"),
        (lambda: replace(LADDER, version=0), "versions start at 1"),
    ],
)
def test_bad_policies_are_refused_with_a_clear_message(build: Any, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        build()


def test_a_running_escalation_keeps_the_version_it_started_with() -> None:
    catalog = PolicyCatalog((LADDER,))
    book = books.TicketEscalations("INC1")
    book, _ = books.on_trigger(book, trigger(), catalog, T0)
    faster = replace(LADDER, version=2, levels=(Level(0 * M, (Target.user("new-lead"),)),))
    catalog = catalog.with_version(faster)
    assert catalog.select(trigger()) == faster
    book, sent, _ = books.due(book, T0 + 20 * M, DIRECTORY)
    assert {n.recipient for n in sent} == {"lead", "carol"}  # version 1's ladder, not new-lead
    assert book.escalations[0].policy.version == 1
    with pytest.raises(Invalid, match="next version is 3"):
        catalog.with_version(replace(LADDER, version=5))


def test_a_retired_policy_answers_nothing() -> None:
    catalog = PolicyCatalog((LADDER, replace(LADDER, version=2, enabled=False)))
    assert catalog.select(trigger()) is None
    assert catalog.version("sla-breach", 1) == LADDER


# The ticket's escalations: idempotent triggers, one ladder per problem, settlement.


def test_a_duplicated_trigger_is_idempotent() -> None:
    catalog = PolicyCatalog((LADDER,))
    book, facts = books.on_trigger(books.TicketEscalations("INC1"), trigger(), catalog, T0)
    book, sent, _ = books.due(book, T0, DIRECTORY)
    assert len(facts) == 1 and len(sent) == 2
    again, more = books.on_trigger(book, trigger(), catalog, T0 + M)
    assert (again, more) == (book, [])
    assert books.due(again, T0 + M, DIRECTORY)[1] == []


def test_one_ladder_per_policy_and_metric_while_it_runs() -> None:
    catalog = PolicyCatalog((LADDER,))
    book = books.TicketEscalations("INC1")
    book, _ = books.on_trigger(book, trigger("e1"), catalog, T0)
    book, facts = books.on_trigger(book, trigger("e2"), catalog, T0 + M)  # same metric
    assert facts == [] and len(book.escalations) == 1
    book, facts = books.on_trigger(book, trigger("e3", metric="first_response"), catalog, T0 + M)
    assert len(facts) == 1 and len(book.escalations) == 2
    assert books.next_wakeup(book) == T0
    book, _ = books.on_settlement(book, Settlement("INC1", "resolved", RESOLVED), T0 + 2 * M)
    assert not book.running and books.next_wakeup(book) is None
    book, facts = books.on_trigger(book, trigger("e2"), catalog, T0 + 3 * M)
    assert facts == []  # seen before: a redelivery after the ladder ended starts nothing


def test_an_sla_clock_stopping_settles_only_the_escalations_it_started() -> None:
    catalog = PolicyCatalog((LADDER,))
    book = books.TicketEscalations("INC1")
    book, _ = books.on_trigger(book, trigger("e1", metric="first_response"), catalog, T0)
    book, _ = books.on_trigger(book, trigger("e2", metric="resolution"), catalog, T0)
    book, facts = books.on_settlement(
        book, Settlement("INC1", "resolved", SlaMet.event_type, "first_response"), T0 + M
    )
    assert [e.status for e in book.escalations] == ["resolved", "triggered"]
    assert [f.cause for f in facts if isinstance(f, EscalationResolved)] == [SlaMet.event_type]


def test_acknowledging_through_the_book() -> None:
    catalog = PolicyCatalog((LADDER,))
    book, _ = books.on_trigger(books.TicketEscalations("INC1"), trigger(), catalog, T0)
    escalation_id = book.escalations[0].id
    book, facts = books.acknowledge(book, escalation_id, "carol", T0 + M, via="link")
    assert isinstance(facts[0], EscalationAcknowledged) and facts[0].via == "link"
    assert book.escalations[0].acknowledged_by == "carol"
    with pytest.raises(NotFound):
        books.acknowledge(book, "nope", "carol", T0)
    with pytest.raises(ValueError, match="applied to INC1"):
        books.on_trigger(book, trigger(ticket_id="INC2"), catalog, T0)


# Properties: whenever the processor wakes up, each step fires once, in order, and never after
# an acknowledgement.

delays = st.lists(st.integers(1, 40), min_size=1, max_size=4, unique=True).map(sorted)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    offsets=delays,
    repeat=st.none() | st.integers(1, 3),
    wakeups=st.lists(st.integers(0, 400), max_size=25).map(sorted),
    ack=st.none() | st.integers(0, 400),
)
def test_steps_fire_once_in_order_whenever_the_processor_wakes(
    offsets: list[int], repeat: int | None, wakeups: list[int], ack: int | None
) -> None:
    levels = tuple(
        Level(d * M, (Target.user(f"u{i}"),), ("email", "webhook"))
        for i, d in enumerate([0, *offsets])
    )
    policy = replace(
        LADDER, levels=levels, repeat=Repeat(repeat, (offsets[-1] + 5) * M) if repeat else None
    )
    escalation, _ = start(policy, trigger(), T0)
    fired: list[int] = []
    keys: list[str] = []
    acked_at: int | None = None
    for minute in wakeups:
        if ack is not None and acked_at is None and ack < minute:
            escalation, _ = acknowledge(escalation, "u0", T0 + ack * M)
            acked_at = ack
        escalation, notes, facts = due_levels(escalation, T0 + minute * M, DIRECTORY)
        fired += [f.step for f in facts if isinstance(f, LevelNotified)]
        keys += [n.key for n in notes]
        assert all(n.deliver_at == T0 + minute * M for n in notes)
    assert fired == list(range(1, len(fired) + 1))  # each step once, in order
    assert len(keys) == len(set(keys))
    last_look = max((m for m in wakeups if acked_at is None or m <= acked_at), default=None)
    due = [
        s
        for s in range(policy.steps)
        if last_look is not None and policy.offset(s) <= last_look * M
    ]
    assert len(fired) == len(due)
    wake = next_wakeup(escalation)
    if escalation.running:
        assert wake == T0 + policy.offset(len(fired))
    else:
        assert wake is None


@settings(max_examples=40, derandomize=True, deadline=None)
@given(offsets=delays, end=st.integers(0, 200))
def test_one_late_wakeup_fires_the_same_steps_as_many_timely_ones(
    offsets: list[int], end: int
) -> None:
    levels = tuple(Level(d * M, (Target.user(f"u{i}"),)) for i, d in enumerate([0, *offsets]))
    escalation, _ = start(replace(LADDER, levels=levels), trigger(), T0)
    once, _, late = run(escalation, [end])
    often, _, timely = run(escalation, list(range(end + 1)))
    assert once.fired == often.fired and once.status == often.status
    assert [f.step for f in late if isinstance(f, LevelNotified)] == [
        f.step for f in timely if isinstance(f, LevelNotified)
    ]


def test_notifications_are_plain_values() -> None:
    escalation, _ = start(LADDER, trigger(), T0)
    _, notes, _ = due_levels(escalation, T0, DIRECTORY)
    note: Notification = notes[0]
    assert (note.event_id, note.ticket_id, note.reason, note.step, note.level, note.round) == (
        "evt-1", "INC1", "escalation", 1, 1, 1,
    )  # fmt: skip
    assert note.escalation_id == escalation.id == escalation_id("sla-breach", "evt-1")
    assert not note.deferred
    assert escalation_id("a/b", "c") != escalation_id("a", "b/c")
    assert re.fullmatch(r"[0-9a-f-]{36}", escalation.id)  # fits in a URL path


def test_the_facts_map_onto_the_notify_event_contracts() -> None:
    escalation, facts = start(LADDER, trigger(), T0)
    escalation, _, fired = due_levels(escalation, T0 + 15 * M, DIRECTORY)
    escalation, acked = acknowledge(escalation, "lead", T0 + 16 * M, via="link")
    escalation, stopped = settle(escalation, "resolved", RESOLVED, T0 + 20 * M)

    def common(f: Any) -> dict[str, Any]:
        return dict(
            escalation_id=f.escalation_id, ticket_id=f.ticket_id, policy_id=f.policy_id,
            policy_version=f.policy_version, occurred_at=f.at,
        )  # fmt: skip

    triggered = facts[0]
    assert isinstance(triggered, EscalationTriggered)
    notify.EscalationTriggered(
        **common(triggered), trigger_event_id=triggered.trigger_event_id,
        trigger_type=triggered.trigger_event_type, priority=triggered.priority, levels=triggered.levels,
    )  # fmt: skip
    levels = [
        notify.EscalationLevelNotified(
            **common(f), level=f.level, recipients=list(f.recipients), next_level_at=f.next_level_at
        )
        for f in fired
        if isinstance(f, LevelNotified)
    ]
    assert [(e.level, e.next_level_at) for e in levels] == [(1, T0 + 15 * M), (2, T0 + 30 * M)]
    ack = acked[0]
    assert isinstance(ack, EscalationAcknowledged)
    contract = notify.EscalationAcknowledged(
        **common(ack), acknowledged_by=ack.by, via=ack.via, level=ack.level
    )
    assert (contract.level, contract.via) == (2, "link")
    assert isinstance(stopped[0], EscalationResolved)
    notify.EscalationStopped(**common(stopped[0]), reason=stopped[0].reason)
