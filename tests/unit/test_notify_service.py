"""The notify service's use cases on the in-memory store with an injected clock: an SLA breach
pages level 1, an acknowledgement or a resolution keeps level 2 from ever being created, a
redelivered event notifies nobody twice, retries end in one delivery, a permanent failure is
dead-lettered, and subscribers hear of P1s."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notify import admin, handlers
from services.notify.api.schemas import PolicyCreate
from services.notify.channels import DeliveryResult, Message, Outcome, Templates
from services.notify.delivery_log import DeliveryRecord
from services.notify.documents import Person
from services.notify.domain.acklinks import verify_token
from services.notify.domain.breaker import BreakerSettings
from services.notify.domain.delivery import RetryPolicy
from services.notify.domain.subscriptions import Subscription
from services.notify.handlers import Notify
from services.notify.routing import Links
from services.notify.sender import DeliveryRules, DeliveryWorker
from services.notify.ticker import EscalationTicker
from shared.bus.port import DeadLetterHeaders
from shared.contracts.codec import KafkaRecord
from shared.contracts.sla import SlaMet, SlaWarning
from shared.errors import Conflict
from shared.store.memory import InMemoryDatabase
from tests.support.notify import breach, created, ladder, resolved, sla_fact

T0 = datetime(2026, 3, 16, 10, 0, tzinfo=UTC)
M = timedelta(minutes=1)
KEY = b"k" * 32


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Recorder:
    """The outside world of a channel: records what was sent, answers as scripted."""

    script: list[Outcome] = field(default_factory=list)
    sent: list[tuple[Message, Any]] = field(default_factory=list)

    async def send(self, message: Message, target: Any) -> DeliveryResult:
        self.sent.append((message, target))
        outcome = self.script.pop(0) if self.script else Outcome.DELIVERED
        detail = "HTTP 200" if outcome is Outcome.DELIVERED else "HTTP 503"
        return DeliveryResult(outcome, "email", "smtp.test:25", detail, 250)

    def to(self) -> list[str]:
        return [target.address for _, target in self.sent]


@dataclass
class Harness:
    database: InMemoryDatabase
    notify: Notify
    worker: DeliveryWorker
    ticker: EscalationTicker
    mail: Recorder
    clock: Clock
    dead_letters: list[KafkaRecord]

    async def deliveries(self, ticket_id: str) -> list[DeliveryRecord]:
        found, _ = await self.notify.deliveries.of_ticket(
            ticket_id, recipient=None, skip=0, limit=100
        )
        return found

    async def outbox(self, collection: str, key: str) -> list[str]:
        document = await self.database[collection].find_one({"_id": key})
        return [e["type"] for e in (document or {}).get("outbox", [])]

    async def advance(self, to: datetime) -> None:
        self.clock.now = to
        await self.ticker.tick(to)
        await self.worker.run_once()


@pytest.fixture
async def harness() -> Harness:
    database = InMemoryDatabase()
    notify = Notify.on(database)
    clock = Clock(T0)
    mail = Recorder()
    dead: list[KafkaRecord] = []

    async def dead_letter(record: KafkaRecord) -> None:
        dead.append(record)

    rules = DeliveryRules(
        retry=RetryPolicy(max_attempts=3, base=timedelta(seconds=10), jitter=0.5),
        breaker=BreakerSettings(failure_threshold=10),
    )
    links = Links("https://itsm.test", "/incidents/{ticket_id}", [KEY], timedelta(hours=1))
    worker = DeliveryWorker(
        notify, {"email": mail.send}, Templates(), links, rules, smtp_endpoint="smtp.test:25",
        dead_letter=dead_letter, clock=clock, rng=lambda: 0.0,
    )  # fmt: skip
    ticker = EscalationTicker(notify, clock)
    notify.on_wakeup = ticker.schedule
    for user in ("alice", "lead", "bob"):
        await notify.people.add(Person(user, 1, email=f"{user}@example.com"), [])
    policy = PolicyCreate.model_validate(ladder()).to_policy("breach-ladder", 1)
    await admin.create_policy(notify, policy, by="admin", now=T0)
    return Harness(database, notify, worker, ticker, mail, clock, dead)


async def test_a_breach_pages_level_one_at_once_and_level_two_when_it_falls_due(
    harness: Harness,
) -> None:
    await handlers.on_sla_event(harness.notify, breach("INC1", T0), now=T0)
    await harness.worker.run_once()
    assert harness.mail.to() == ["alice@example.com"]
    message = harness.mail.sent[0][0]
    assert message.kind == "escalation_level" and "INC0" not in message.subject  # not seen yet
    assert message.ack_url and message.ack_url.startswith("https://itsm.test/api/v1/notify/ack/")
    claim = verify_token(message.ack_url.rsplit("/", 1)[1], [KEY], T0)
    assert claim.recipient == "alice"
    [logged] = await harness.deliveries("INC1")
    assert (logged.status, len(logged.attempts), logged.destination) == (
        "sent", 1, "alice@example.com",
    )  # fmt: skip
    assert await harness.outbox("notify_deliveries", logged.key) == [
        "itsm.notify.notification_sent.v1"
    ]
    assert await harness.outbox("notify_escalations", "INC1") == [
        "itsm.notify.escalation_triggered.v1", "itsm.notify.escalation_level_notified.v1",
    ]  # fmt: skip

    await harness.advance(T0 + 14 * M)
    assert harness.mail.to() == ["alice@example.com"]  # not yet
    await harness.advance(T0 + 15 * M)
    assert harness.mail.to() == ["alice@example.com", "lead@example.com"]
    stored = await harness.notify.escalations.get("INC1")
    assert stored is not None
    [escalation] = stored.book.escalations
    assert (escalation.status, escalation.level) == ("exhausted", 2)


async def test_after_a_restart_the_ticker_rebuilds_its_wakeups_from_the_store(
    harness: Harness,
) -> None:
    await handlers.on_sla_event(harness.notify, breach("INC1", T0), now=T0)
    restarted = EscalationTicker(harness.notify, harness.clock)  # a new process: empty index
    harness.notify.on_wakeup = restarted.schedule
    assert await restarted.tick(T0 + 15 * M) == 0
    await restarted.resync()
    assert restarted.index.get("INC1") == T0 + 15 * M
    assert await restarted.tick(T0 + 15 * M) == 1
    deliveries = await harness.deliveries("INC1")
    assert [(d.notification.recipient, d.notification.level) for d in deliveries] == [
        ("alice", 1),
        ("lead", 2),
    ]
    assert await restarted.tick(T0 + 16 * M) == 0  # exhausted: nothing left to wake up for


async def test_an_acknowledgement_means_level_two_is_never_created(harness: Harness) -> None:
    await handlers.on_sla_event(harness.notify, breach("INC1", T0), now=T0)
    [escalation] = (await harness.notify.escalations.get("INC1")).book.escalations  # type: ignore[union-attr]
    await handlers.acknowledge(harness.notify, escalation.id, by="alice", via="api", now=T0 + 5 * M)
    await harness.advance(T0 + 60 * M)
    deliveries = await harness.deliveries("INC1")
    assert [d.notification.recipient for d in deliveries] == ["alice"]
    assert harness.ticker.index.get("INC1") is None
    with pytest.raises(Conflict, match="acknowledged"):
        await handlers.acknowledge(harness.notify, escalation.id, by="lead", via="api", now=T0)
    assert "itsm.notify.escalation_acknowledged.v1" in await harness.outbox(
        "notify_escalations", "INC1"
    )


async def test_resolving_the_incident_stops_the_escalation_and_cancels_its_unsent_messages(
    harness: Harness,
) -> None:
    await handlers.on_incident_event(harness.notify, created("INC1", T0), now=T0)
    await handlers.on_sla_event(harness.notify, breach("INC1", T0), now=T0)
    await handlers.on_incident_event(harness.notify, resolved("INC1", T0 + M), now=T0 + M)
    await harness.advance(T0 + 60 * M)
    assert harness.mail.sent == []  # level 1 was still waiting: it is cancelled, not sent
    [level_one] = await harness.deliveries("INC1")
    assert level_one.status == "cancelled"
    stored = await harness.notify.escalations.get("INC1")
    assert stored is not None and stored.book.escalations[0].status == "resolved"


async def test_a_met_sla_clock_settles_the_escalation_its_breach_started(harness: Harness) -> None:
    await handlers.on_sla_event(harness.notify, breach("INC1", T0), now=T0)
    await harness.worker.run_once()
    met = sla_fact(SlaMet, "INC1", T0 + M, sequence=2)
    await handlers.on_sla_event(harness.notify, met, now=T0 + M)
    await harness.advance(T0 + 60 * M)
    assert harness.mail.to() == ["alice@example.com"]


async def test_a_duplicated_breach_sends_one_mail(harness: Harness) -> None:
    event = breach("INC1", T0)
    await handlers.on_sla_event(harness.notify, event, now=T0)
    await harness.worker.run_once()
    await handlers.on_sla_event(harness.notify, event, now=T0 + M)  # redelivered
    await harness.advance(T0 + 2 * M)
    assert harness.mail.to() == ["alice@example.com"]
    assert len(await harness.deliveries("INC1")) == 1


async def test_transient_failures_are_retried_with_backoff_until_one_delivery(
    harness: Harness,
) -> None:
    harness.mail.script = [Outcome.TRANSIENT, Outcome.TRANSIENT]
    await handlers.on_sla_event(harness.notify, breach("INC1", T0), now=T0)
    await harness.worker.run_once()
    [logged] = await harness.deliveries("INC1")
    assert (logged.status, logged.next_attempt_at) == ("retrying", T0 + timedelta(seconds=10))
    await harness.advance(T0 + timedelta(seconds=9))
    assert len(harness.mail.sent) == 1  # the backoff is respected
    await harness.advance(T0 + timedelta(seconds=10))
    await harness.advance(T0 + timedelta(seconds=30))  # 10 s, then 20 s (doubling)
    [logged] = await harness.deliveries("INC1")
    assert [a.outcome for a in logged.attempts] == ["transient", "transient", "success"]
    assert logged.status == "sent" and len(harness.mail.sent) == 3
    assert harness.dead_letters == []


async def test_a_permanent_failure_fails_at_once_and_goes_to_the_dead_letter_topic(
    harness: Harness,
) -> None:
    harness.mail.script = [Outcome.PERMANENT]
    await handlers.on_sla_event(harness.notify, breach("INC1", T0), now=T0)
    await harness.worker.run_once()
    [logged] = await harness.deliveries("INC1")
    assert (logged.status, len(logged.attempts)) == ("failed", 1)
    [record] = harness.dead_letters
    assert record.key == logged.key.encode()
    assert b"notification failed: HTTP 503" in dict(record.headers)[DeadLetterHeaders.ERROR]
    assert await harness.outbox("notify_deliveries", logged.key) == [
        "itsm.notify.notification_failed.v1"
    ]


async def test_a_recipient_missing_from_the_directory_fails_clearly(harness: Harness) -> None:
    body = ladder("warnings", first="nobody", event_types=(SlaWarning.event_type,))
    policy = PolicyCreate.model_validate(body).to_policy("warnings", 1)
    await admin.create_policy(harness.notify, policy, by="admin", now=T0)
    warning = sla_fact(SlaWarning, "INC2", T0, threshold=80)
    await handlers.on_sla_event(harness.notify, warning, now=T0)
    await harness.worker.run_once()
    [logged] = await harness.deliveries("INC2")
    assert (logged.status, logged.error) == ("failed", "nobody is not in the notify directory")
    assert len(harness.dead_letters) == 1 and harness.mail.sent == []


async def test_subscribers_hear_of_a_p1_once_and_never_of_their_own_action(
    harness: Harness,
) -> None:
    for user in ("bob", "alice"):
        await harness.notify.subscriptions.put(Subscription(user, "p1_opened"))
    event = created("INC9", T0, priority="P1", actor="alice")
    await handlers.on_incident_event(harness.notify, event, now=T0)
    await handlers.on_incident_event(harness.notify, event, now=T0)  # redelivered
    await harness.worker.run_once()
    assert harness.mail.to() == ["bob@example.com"]
    message = harness.mail.sent[0][0]
    assert message.kind == "incident_p1_opened" and "INC0000042" in message.subject
