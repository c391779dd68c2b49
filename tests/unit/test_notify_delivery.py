"""Delivery rules (dedup key, retries with backoff and jitter, rate limits, circuit breakers),
signed acknowledgement links, subscriptions, and the mapping from the contracts' events."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notify.domain.acklinks import AckClaim, InvalidAckLink, create_token, verify_token
from services.notify.domain.breaker import (
    TRANSITIONS as BREAKER,
)
from services.notify.domain.breaker import (
    BreakerSettings,
    CircuitBreaker,
    allow,
    record,
    step,
)
from services.notify.domain.delivery import (
    TRANSITIONS as DELIVERY,
)
from services.notify.domain.delivery import (
    Attempt,
    Delivery,
    RetryPolicy,
    classify,
    dedup_key,
    record_attempt,
)
from services.notify.domain.quiet_hours import QuietHours
from services.notify.domain.rate_limit import RateLimit, take
from services.notify.domain.recipients import Directory
from services.notify.domain.subscriptions import Subscription, subscription_notifications
from services.notify.domain.triggers import (
    Settlement,
    TicketView,
    concerns_notify,
    follow,
    incident_trigger,
    settlement,
    sla_trigger,
)
from shared.contracts.incidents import (
    FieldChange,
    IncidentAssigned,
    IncidentClosed,
    IncidentCreated,
    IncidentEvent,
    IncidentMajorDeclared,
    IncidentReplied,
    IncidentReprioritized,
    IncidentUpdated,
)
from shared.contracts.sla import (
    SlaBreached,
    SlaCancelled,
    SlaMet,
    SlaMissed,
    SlaPaused,
    SlaResumed,
    SlaStarted,
    SlaWarning,
)
from shared.errors import Invalid

S = timedelta(seconds=1)
T0 = datetime(2026, 3, 16, 10, 0, tzinfo=UTC)


# The dedup key.


def test_the_dedup_key_is_event_x_recipient_x_channel_x_step() -> None:
    key = dedup_key("evt-1", "alice", "email", 1)
    assert key == dedup_key("evt-1", "alice", "email", 1)  # a redelivery maps to it again
    others = {
        dedup_key("evt-2", "alice", "email", 1), dedup_key("evt-1", "bob", "email", 1),
        dedup_key("evt-1", "alice", "slack", 1), dedup_key("evt-1", "alice", "email", 2),
    }  # fmt: skip
    assert key not in others and len(others) == 4
    # Ids from outside may hold separators: no two tuples share a key.
    assert dedup_key("a:1", "b", "email") != dedup_key("a", "1:b", "email")


# Retries.


@pytest.mark.parametrize(
    ("status", "timed_out", "outcome"),
    [
        (200, False, "success"), (202, False, "success"), (204, False, "success"),
        (500, False, "transient"), (502, False, "transient"), (503, False, "transient"),
        (429, False, "transient"), (408, False, "transient"), (None, False, "transient"),
        (None, True, "transient"), (400, False, "permanent"), (401, False, "permanent"),
        (404, False, "permanent"), (410, False, "permanent"), (301, False, "permanent"),
    ],
)  # fmt: skip
def test_classify(status: int | None, timed_out: bool, outcome: str) -> None:
    assert classify(status, timed_out=timed_out) == outcome


@pytest.mark.parametrize("status", ["pending", "retrying", "sent", "failed"])
@pytest.mark.parametrize("outcome", ["success", "transient", "permanent"])
def test_delivery_transition_table(status: str, outcome: str) -> None:
    expected = {
        "pending": {"success": "sent", "transient": "retrying", "permanent": "failed"},
        "retrying": {"success": "sent", "transient": "retrying", "permanent": "failed"},
    }.get(status, {})
    assert DELIVERY.get((status, outcome)) == expected.get(outcome)  # type: ignore[arg-type]


def fixed(value: float) -> Any:
    return lambda: value


def test_500_twice_then_200_is_one_delivery_with_three_attempts() -> None:
    policy = RetryPolicy(max_attempts=5, base=2 * S, cap=60 * S, jitter=0.5)
    delivery = Delivery(key="k", endpoint="https://hooks.example")
    delivery = record_attempt(
        delivery, Attempt(T0, "transient", "HTTP 500"), policy=policy, random=fixed(0.0)
    )
    assert (delivery.status, delivery.next_attempt_at) == ("retrying", T0 + 2 * S)
    later = T0 + 2 * S
    delivery = record_attempt(
        delivery, Attempt(later, "transient", "HTTP 500"), policy=policy, random=fixed(0.5)
    )
    assert delivery.next_attempt_at == later + 3 * S  # 4 s, less half of the 50 % jitter
    delivery = record_attempt(
        delivery, Attempt(later + 3 * S, "success", "HTTP 200"), policy=policy, random=fixed(0.0)
    )
    assert delivery.status == "sent" and delivery.next_attempt_at is None
    assert [a.detail for a in delivery.attempts] == ["HTTP 500", "HTTP 500", "HTTP 200"]
    again = record_attempt(
        delivery, Attempt(later + 9 * S, "transient"), policy=policy, random=fixed(0)
    )
    assert again == delivery  # a late duplicate result changes nothing


def test_transient_failures_up_to_max_attempts_then_failed_and_permanent_at_once() -> None:
    policy = RetryPolicy(max_attempts=3)
    delivery = Delivery(key="k", endpoint="smtp")
    for n in range(3):
        delivery = record_attempt(
            delivery, Attempt(T0 + n * S, "transient", "timeout"), policy=policy, random=fixed(0)
        )
    assert delivery.status == "failed" and len(delivery.attempts) == 3
    assert delivery.next_attempt_at is None
    refused = record_attempt(
        Delivery("k", "smtp"), Attempt(T0, "permanent", "HTTP 404"), policy=policy, random=fixed(0)
    )
    assert refused.status == "failed" and len(refused.attempts) == 1


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(base=S, cap=30 * S)
    first = record_attempt(
        Delivery("k", "e"),
        Attempt(T0, "transient", "HTTP 429"),
        policy=policy,
        random=fixed(0),
        retry_after=20 * S,
    )
    assert first.next_attempt_at == T0 + 20 * S
    capped = record_attempt(
        Delivery("k", "e"),
        Attempt(T0, "transient"),
        policy=policy,
        random=fixed(0),
        retry_after=3600 * S,
    )
    assert capped.next_attempt_at == T0 + 30 * S


@settings(max_examples=100, derandomize=True, deadline=None)
@given(
    attempts=st.integers(1, 12),
    draw=st.floats(0, 1, exclude_max=True),
    jitter=st.floats(0, 1),
    base=st.integers(1, 30),
)
def test_backoff_grows_exponentially_within_the_jitter_band_and_the_cap(
    attempts: int, draw: float, jitter: float, base: int
) -> None:
    policy = RetryPolicy(max_attempts=20, base=base * S, cap=300 * S, jitter=jitter)
    wait = policy.backoff(attempts, fixed(draw))
    ceiling = min(300 * S, base * S * 2 ** (attempts - 1))
    assert ceiling * (1 - jitter) - timedelta(microseconds=1) <= wait <= ceiling


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "at least 1"),
        ({"base": 0 * S}, "positive"),
        ({"base": 600 * S}, "at most the cap"),
        ({"jitter": 1.5}, "share"),
    ],
)
def test_bad_retry_policies_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(Invalid, match=message):
        RetryPolicy(**kwargs)


# Rate limits.


def test_a_burst_goes_at_once_then_messages_take_the_next_free_slots() -> None:
    limit = RateLimit(rate=6, per=timedelta(hours=1), burst=2, max_delay=timedelta(minutes=15))
    bucket = None
    slots = []
    for _ in range(5):
        bucket, slot = take(limit, bucket, T0)
        slots.append(slot)
    minutes = timedelta(minutes=1)
    assert slots == [T0, T0, T0 + 10 * minutes, None, None]  # beyond 15 minutes: dropped
    bucket, slot = take(limit, bucket, T0 + 5 * minutes, priority="P1")
    assert slot == T0 + 5 * minutes  # a P1 is never held back, but it counts
    bucket, slot = take(limit, bucket, T0 + 60 * minutes)
    assert slot == T0 + 60 * minutes  # refilled


@settings(max_examples=60, derandomize=True, deadline=None)
@given(gaps=st.lists(st.integers(0, 600), min_size=1, max_size=40), burst=st.integers(1, 5))
def test_no_window_carries_more_than_the_burst_plus_the_refill(gaps: list[int], burst: int) -> None:
    limit = RateLimit(rate=10, per=timedelta(minutes=10), burst=burst, max_delay=timedelta(hours=2))
    bucket = None
    now = T0
    slots = []
    for gap in gaps:
        now += gap * S
        bucket, slot = take(limit, bucket, now)
        assert slot is not None and slot >= now
        slots.append(slot)
    slots.sort()
    for i, first in enumerate(slots):
        for j in range(i, len(slots)):
            span = slots[j] - first
            assert j - i + 1 <= burst + span / limit.interval + 1e-9


# The circuit breaker.

SETTINGS = BreakerSettings(failure_threshold=3, cooldown=30 * S)


@pytest.mark.parametrize("state", ["closed", "open", "half_open"])
@pytest.mark.parametrize("event", ["success", "failure", "trip", "cooldown_elapsed"])
def test_breaker_transition_table(state: str, event: str) -> None:
    expected = {
        ("closed", "success"): "closed", ("closed", "failure"): "closed", ("closed", "trip"): "open",
        ("open", "cooldown_elapsed"): "half_open", ("half_open", "success"): "closed",
        ("half_open", "failure"): "open",
    }.get((state, event))  # fmt: skip
    breaker = CircuitBreaker("e", state=state, since=T0)  # type: ignore[arg-type]
    if expected is None:
        with pytest.raises(KeyError):
            step(breaker, event, T0)  # type: ignore[arg-type]
    else:
        assert step(breaker, event, T0).state == expected  # type: ignore[arg-type]
    assert len(BREAKER) == 6


def test_the_breaker_opens_after_consecutive_failures_and_probes_after_the_cooldown() -> None:
    breaker = CircuitBreaker("https://hooks.example")
    breaker = record(breaker, False, T0, SETTINGS)
    breaker = record(breaker, True, T0, SETTINGS)  # a success resets the count
    for n in range(3):
        assert breaker.state == "closed"
        breaker = record(breaker, False, T0 + n * S, SETTINGS)
    assert (breaker.state, breaker.since) == ("open", T0 + 2 * S)
    assert allow(breaker, T0 + 10 * S, SETTINGS) == (breaker, T0 + 32 * S)
    assert record(breaker, True, T0 + 11 * S, SETTINGS) == breaker  # a late result
    breaker, wait = allow(breaker, T0 + 32 * S, SETTINGS)
    assert (breaker.state, wait) == ("half_open", None)  # this one is the probe
    assert allow(breaker, T0 + 33 * S, SETTINGS)[1] == T0 + 62 * S  # one probe at a time
    reopened = record(breaker, False, T0 + 34 * S, SETTINGS)
    assert (reopened.state, reopened.since) == ("open", T0 + 34 * S)
    closed = record(breaker, True, T0 + 34 * S, SETTINGS)
    assert (closed.state, closed.failures) == ("closed", 0)
    assert allow(closed, T0 + 35 * S, SETTINGS) == (closed, None)
    lost_probe, wait = allow(breaker, T0 + 62 * S, SETTINGS)  # the probe never reported back
    assert wait is None and lost_probe.since == T0 + 62 * S


# Acknowledgement links.

KEY = b"k" * 32
OLD_KEY = b"o" * 32
CLAIM = AckClaim("tok-1", "sla-breach/evt-1", "carol", T0 + timedelta(hours=24))


def test_a_genuine_link_verifies_and_returns_its_token_id_for_single_use() -> None:
    token = create_token(CLAIM, KEY)
    assert verify_token(token, [KEY], T0) == CLAIM
    assert verify_token(create_token(CLAIM, OLD_KEY), [KEY, OLD_KEY], T0).token_id == "tok-1"
    assert "carol" not in token.split(".")[2]


def forged(payload: dict[str, Any]) -> str:
    _, _, signature = create_token(CLAIM, KEY).split(".")
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"v1.{body}.{signature}"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: create_token(CLAIM, b"x" * 32), "bad_signature"),  # another key
        (
            lambda: forged({"t": "tok-1", "e": "sla-breach/evt-1", "u": "mallory", "x": 2**40}),
            "bad_signature",
        ),
        (lambda: create_token(CLAIM, KEY)[:-2] + "AA", "bad_signature"),
        (lambda: create_token(CLAIM, KEY).replace("v1.", "v2.", 1), "malformed"),
        (lambda: "v1.only-two", "malformed"),
        (lambda: create_token(CLAIM, KEY) + "!", "malformed"),
        (lambda: "", "malformed"),
        (lambda: create_token(replace(CLAIM, expires_at=T0), KEY), "expired"),
    ],
)
def test_a_bad_link_is_refused_with_its_reason(token: Any, reason: str) -> None:
    with pytest.raises(InvalidAckLink) as refused:
        verify_token(token(), [KEY], T0)
    assert refused.value.reason == reason


def test_short_or_missing_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        create_token(CLAIM, b"short")
    with pytest.raises(ValueError, match="no acknowledgement link key"):
        verify_token(create_token(CLAIM, KEY), [], T0)


# Subscriptions.

NOW = T0
VIEW = TicketView("INC1", "new", priority="P1", service="mail")


def created(**changes: Any) -> IncidentCreated:
    fields: dict[str, Any] = dict(
        incident_id="INC1", actor="reporter", status="new", number="INC0001", title="Mail down",
        requester="reporter", impact=1, urgency=1, priority="P1", opened_at=T0, service="mail",
    )  # fmt: skip
    fields.update(changes)
    return IncidentCreated(**fields)


def assigned(
    assignee: str | None, previous: str | None, actor: str = "dispatcher"
) -> IncidentAssigned:
    return IncidentAssigned(
        incident_id="INC1", actor=actor, status="assigned", group="noc", tier="L1",
        assignee=assignee, previous_group=None, previous_assignee=previous, reassignment_count=0,
    )  # fmt: skip


def reprioritized(priority: str, previous: str) -> IncidentReprioritized:
    return IncidentReprioritized(
        incident_id="INC1", actor="agent", status="assigned", impact=1, urgency=1,
        priority=priority, previous_priority=previous, reason="worse",  # type: ignore[arg-type]
    )  # fmt: skip


SUBSCRIPTIONS = [
    Subscription("pat", "p1_opened", ("email", "slack")),
    Subscription("mailops", "p1_opened", ("email",), services=frozenset({"mail"})),
    Subscription("webops", "p1_opened", ("email",), services=frozenset({"web"})),
    Subscription("chief", "major_declared", ("teams",)),
    Subscription("sam", "assigned_to_me"),
    Subscription("agent", "p1_opened"),
]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (created(), {("pat", "email"), ("pat", "slack"), ("mailops", "email"), ("agent", "email")}),
        (created(priority="P2"), set()),
        (
            reprioritized("P1", "P3"),
            {("pat", "email"), ("pat", "slack"), ("mailops", "email")},
        ),  # not the actor
        (reprioritized("P1", "P1"), set()),
        (reprioritized("P2", "P1"), set()),
        (
            IncidentMajorDeclared(
                incident_id="INC1", actor="mim", status="assigned", reason="outage", priority="P1"
            ),
            {("chief", "teams")},
        ),
        (assigned("sam", None), {("sam", "email")}),
        (assigned("sam", "sam"), set()),  # no news: still sam
        (assigned("sam", None, actor="sam"), set()),  # took it themselves
        (assigned("kim", "sam"), set()),
        (assigned(None, None), set()),
        (
            IncidentReplied(
                incident_id="INC1",
                actor="a",
                status="assigned",
                body="hi",
                by_staff=True,
                first_response=True,
            ),
            set(),
        ),
    ],
)
def test_subscriptions_match_key_incident_events(
    event: IncidentEvent, expected: set[tuple[str, str]]
) -> None:
    notes = subscription_notifications(SUBSCRIPTIONS, "evt-9", event, VIEW, NOW, Directory())
    assert {(n.recipient, n.channel) for n in notes} == expected
    assert all(n.reason == "subscription" and n.step == 0 and n.event_id == "evt-9" for n in notes)
    again = subscription_notifications(SUBSCRIPTIONS, "evt-9", event, VIEW, NOW, Directory())
    assert [n.key for n in again] == [n.key for n in notes]  # a redelivery: the same keys


def test_subscribers_quiet_hours_apply_except_to_p1() -> None:
    night = QuietHours("UTC", time(22), time(7))
    directory = Directory(quiet_hours={"sam": night, "pat": night})
    late = datetime(2026, 3, 16, 23, 0, tzinfo=UTC)
    p3 = replace(VIEW, priority="P3")
    [note] = subscription_notifications(
        SUBSCRIPTIONS, "e", assigned("sam", None), p3, late, directory
    )
    assert note.deliver_at == datetime(2026, 3, 17, 7, 0, tzinfo=UTC) and note.priority == "P3"
    p1_notes = subscription_notifications(SUBSCRIPTIONS, "e", created(), VIEW, late, directory)
    assert {n.deliver_at for n in p1_notes} == {late}


def test_a_bad_subscription_is_refused() -> None:
    with pytest.raises(Invalid, match="kind"):
        Subscription("u", "everything")  # type: ignore[arg-type]
    with pytest.raises(Invalid, match="channels"):
        Subscription("u", "p1_opened", ("fax",))  # type: ignore[arg-type]


# From the contracts' events.


def sla(cls: Any, metric: str = "resolution", **extra: Any) -> Any:
    return cls(
        ticket_id="INC1", ticket_type="incident", metric=metric, priority="P2", policy_id="p",
        policy_version=1, policy_name="P2", calendar="24x7", status="breached",
        target_seconds=60, elapsed_seconds=60, deadline=T0, occurred_at=T0, **extra,
    )  # fmt: skip


def test_following_a_ticket_and_matching_its_sla_facts() -> None:
    view = follow(None, created(priority="P2"))
    view = follow(view, assigned("sam", None))
    view = follow(view, IncidentUpdated(
        incident_id="INC1", actor="a", status="assigned",
        changes={"service": FieldChange(before="mail", after="mail-eu"), "title": FieldChange(before="x", after="Mail slow")},
    ))  # fmt: skip
    view = follow(view, reprioritized("P1", "P2"))
    assert (view.priority, view.service, view.group, view.assignee, view.title, view.status) == (
        "P1", "mail-eu", "noc", "sam", "Mail slow", "assigned",
    )  # fmt: skip
    breach = sla_trigger("evt-7", sla(SlaBreached), view)
    assert breach is not None
    assert (breach.event_type, breach.priority, breach.service, breach.group, breach.metric) == (
        SlaBreached.event_type, "P2", "mail-eu", "noc", "resolution",
    )  # fmt: skip
    ola = sla_trigger("evt-8", sla(SlaBreached, metric="ola:l2-network"), view)
    assert ola is not None and ola.group == "l2-network"
    assert sla_trigger("evt-9", sla(SlaBreached), None) is not None
    assert sla_trigger("evt-9", sla(SlaStarted), view) is None


@pytest.mark.parametrize(
    ("fact", "concerns"),
    [
        (SlaStarted, False),
        (SlaPaused, False),
        (SlaResumed, False),
        (SlaWarning, True),  # may start an escalation
        (SlaBreached, True),
        (SlaMet, True),  # settles the escalations its clock started
        (SlaMissed, True),
        (SlaCancelled, True),
    ],
)
def test_which_sla_facts_notify_reads_and_stores_anything_for(fact: Any, concerns: bool) -> None:
    extra = {
        SlaWarning: {"threshold": 50},
        SlaPaused: {"pending_reason": None},
        SlaResumed: {"reason": "left_pending"},
        SlaCancelled: {"reason": "cancelled"},
    }.get(fact, {})
    assert concerns_notify(sla(fact, **extra)) is concerns


def test_incident_triggers_and_settlements() -> None:
    view = follow(None, created())
    trigger = incident_trigger("evt-1", created(), view, T0)
    assert trigger is not None and (trigger.priority, trigger.service) == ("P1", "mail")
    reply = IncidentReplied(
        incident_id="INC1",
        actor="a",
        status="assigned",
        body="b",
        by_staff=True,
        first_response=True,
    )
    assert incident_trigger("evt-2", reply, view, T0) is None
    assert settlement(
        IncidentClosed(incident_id="INC1", actor="a", status="closed", closure="manual")
    ) == Settlement("INC1", "resolved", IncidentClosed.event_type)
    assert settlement(sla(SlaMet, metric="first_response")) == Settlement(
        "INC1", "resolved", SlaMet.event_type, "first_response"
    )
    assert settlement(reply) is None and settlement(sla(SlaBreached)) is None
