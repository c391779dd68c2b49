"""The delivery worker: sends the logged notifications that are due through their channels.

For each due delivery: claim it (a version-guarded lease, so two workers never send it at
once), drop it if its escalation ended meanwhile, look up the recipient's target, take a
rate-limit slot (per recipient x channel) and ask the endpoint's circuit breaker, render it,
send it, and record the attempt. A transient failure is retried with exponential backoff and
jitter; the last failed attempt, or a permanent failure, marks it failed and sends it to the
dead-letter topic. `notification_sent` / `notification_failed` go out through the delivery
document's outbox. Rate-limit buckets and breakers live in the worker's memory (per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from opentelemetry import trace
from prometheus_client import Counter

from services.notify.channels import DeliveryResult, Outcome, Templates
from services.notify.delivery_log import DeliveryRecord, LogStatus
from services.notify.domain import breaker as breakers
from services.notify.domain import rate_limit
from services.notify.domain.breaker import BreakerSettings, CircuitBreaker
from services.notify.domain.delivery import Attempt, AttemptOutcome, RetryPolicy, record_attempt
from services.notify.domain.escalation import Escalation, still_wanted
from services.notify.domain.rate_limit import Bucket, RateLimit
from services.notify.facts import SOURCE, notification_event
from services.notify.handlers import Notify
from services.notify.routing import Links, Unreachable, notice, render, route
from shared.background import BackgroundTask
from shared.bus.port import DeadLetterHeaders
from shared.contracts.codec import KafkaRecord, encode
from shared.contracts.envelope import sequenced
from shared.metrics import DEAD_LETTERED
from shared.store.errors import ConcurrencyConflict
from shared.telemetry import context_of

log = structlog.get_logger(__name__)
_tracer = trace.get_tracer("itsm.notify")
OUTCOMES: dict[Outcome, AttemptOutcome] = {
    Outcome.DELIVERED: "success",
    Outcome.TRANSIENT: "transient",
    Outcome.PERMANENT: "permanent",
}
DEAD_LETTER_GROUP = "notify-delivery"
NOTIFICATIONS = Counter(
    "itsm_notifications_total",
    "Notification deliveries by channel and outcome: sent, failed (for good, dead-lettered), "
    "retrying (a transient failure, tried again later), dropped (rate limit), cancelled "
    "(the escalation ended)",
    ["channel", "outcome"],
)
Send = Callable[[Any, Any], Awaitable[DeliveryResult]]  # (message, target) -> result
PublishRecord = Callable[[KafkaRecord], Awaitable[None]]


@dataclass(frozen=True)
class DeliveryRules:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rate: RateLimit = field(
        default_factory=lambda: RateLimit(rate=30, per=timedelta(hours=1), burst=10)
    )
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    lease: timedelta = timedelta(seconds=60)  # longer than any one attempt's total timeout


@contextlib.contextmanager
def delivery_span(record: DeliveryRecord) -> Iterator[None]:
    """A span for one delivery attempt in the trace the notification belongs to (the breach's,
    through its escalation), so the send shows up under the incident's trace."""
    notification = record.notification
    with _tracer.start_as_current_span(
        "notify deliver",
        context=context_of(record.trace) if record.trace else None,
        attributes={
            "itsm.ticket_id": notification.ticket_id,
            "itsm.notify.channel": notification.channel,
            "itsm.notify.key": record.key,
        },
    ):
        yield


class DeliveryWorker:
    def __init__(
        self,
        notify: Notify,
        senders: Mapping[str, Send],
        templates: Templates,
        links: Links,
        rules: DeliveryRules,
        *,
        smtp_endpoint: str,
        dead_letter: PublishRecord,
        clock: Callable[[], datetime],
        poll_interval: float = 1.0,
        batch_size: int = 50,
        concurrency: int = 8,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._notify = notify
        self._senders = senders
        self._templates = templates
        self._links = links
        self._rules = rules
        self._smtp_endpoint = smtp_endpoint
        self._dead_letter = dead_letter
        self._clock = clock
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._slots = asyncio.Semaphore(concurrency)
        self._rng = rng
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._wake = asyncio.Event()
        self._task = BackgroundTask("notify-delivery")

    def nudge(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                handled = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is away: try again on the next pass
                log.warning("notify.delivery_pass_failed", error=repr(exc))
                handled = 0
            if handled:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=await self._idle_wait())

    async def _idle_wait(self) -> float:
        wait = self._poll_interval
        with contextlib.suppress(Exception):
            due = await self._notify.deliveries.next_due_at()
            if due is not None:
                wait = min(wait, max((due - self._clock()).total_seconds(), 0.0))
        return max(wait, 0.01)

    async def run_once(self) -> int:
        """Try every delivery due now (at most a batch); returns how many were due."""
        due = await self._notify.deliveries.due(self._clock(), self._batch_size)
        await asyncio.gather(*(self._guarded(record) for record in due))
        return len(due)

    async def _guarded(self, record: DeliveryRecord) -> None:
        async with self._slots:
            try:
                with delivery_span(record):
                    await self.deliver(record)
            except ConcurrencyConflict:
                pass  # another worker took it, or it changed: the next pass sees it again
            except Exception as exc:
                log.warning("notify.delivery_failed", key=record.key, error=repr(exc))

    async def deliver(self, record: DeliveryRecord) -> DeliveryRecord:
        now = self._clock()
        claimed = replace(record, version=record.version + 1, lease_until=now + self._rules.lease)
        await self._notify.deliveries.save(claimed, record.version, [])
        notification = claimed.notification
        escalation = await self._escalation(notification.ticket_id, notification.escalation_id)
        if escalation is not None and not still_wanted(escalation, notification):
            return await self._close(claimed, "cancelled", f"escalation {escalation.status}")
        person = await self._notify.people.get(notification.recipient)
        try:
            where = route(notification, person, self._smtp_endpoint)
        except Unreachable as exc:
            return await self._fail(claimed, str(exc), destination="-", permanent=True)
        claimed = replace(claimed, destination=where.destination, endpoint=where.endpoint)
        if claimed.rate_slot is None:
            key = (notification.recipient, notification.channel)
            bucket, slot = rate_limit.take(
                self._rules.rate, self._buckets.get(key), now, notification.priority
            )
            self._buckets[key] = bucket
            if slot is None:
                return await self._close(claimed, "dropped", "over the rate limit")
            claimed = replace(claimed, rate_slot=slot)
            if slot > now:
                return await self._later(claimed, slot)
        held = self._breakers.get(where.endpoint) or CircuitBreaker(where.endpoint)
        held, reopens = breakers.allow(held, now, self._rules.breaker)
        self._breakers[where.endpoint] = held
        if reopens is not None:
            return await self._later(claimed, reopens)
        view, _ = await self._notify.views.get(notification.ticket_id)
        message = render(
            self._templates, notice(notification, view, escalation, self._links, person, now), now
        )
        with _tracer.start_as_current_span(
            f"{notification.channel} send", kind=trace.SpanKind.CLIENT
        ) as span:
            result = await self._senders[notification.channel](message, where.target)
            span.set_attribute("itsm.notify.outcome", result.outcome.value)
        return await self._record(claimed, result)

    async def _escalation(self, ticket_id: str, escalation_id: str | None) -> Escalation | None:
        if escalation_id is None:
            return None
        # By the ticket's id, the document's `_id`: the one lookup FerretDB does not answer by
        # decoding every escalation document (bench/notify_delivery.py: 2x deliveries/s).
        stored = await self._notify.escalations.get(ticket_id)
        if stored is None or escalation_id not in {e.id for e in stored.book.escalations}:
            return None  # its first write is still under way: it was just started
        return stored.book.get(escalation_id)

    async def _record(self, claimed: DeliveryRecord, result: DeliveryResult) -> DeliveryRecord:
        now = self._clock()
        outcome = OUTCOMES[result.outcome]
        attempt = Attempt(now, outcome, result.detail)
        retry_after = timedelta(seconds=result.retry_after) if result.retry_after else None
        delivery = record_attempt(
            claimed.as_delivery(),
            attempt,
            policy=self._rules.retry,
            random=self._rng,
            retry_after=retry_after,
        )
        endpoint = claimed.endpoint or ""
        self._breakers[endpoint] = breakers.record(
            self._breakers.get(endpoint) or CircuitBreaker(endpoint),
            outcome != "transient",  # a 4xx is the message's fault: the endpoint is up
            now,
            self._rules.breaker,
        )
        error = None if outcome == "success" else result.detail
        after = claimed.after(delivery, lease_until=None, error=error)
        if delivery.status == "sent":
            log.info(
                "notify.delivered",
                key=after.key,
                channel=after.notification.channel,
                endpoint=after.endpoint,
                attempts=len(after.attempts),
            )
            return await self._store(after, claimed, sent=True)
        if delivery.status == "failed":
            await self._dead_letter_record(after, result.detail, permanent=outcome == "permanent")
            return await self._store(after, claimed, sent=False, permanent=outcome == "permanent")
        await self._notify.deliveries.save(after, claimed.version, [])
        _count(after, "retrying")
        log.info(
            "notify.delivery_retrying",
            key=after.key,
            channel=after.notification.channel,
            endpoint=after.endpoint,
            attempts=len(after.attempts),
            detail=result.detail,
        )
        self.nudge()
        return after

    async def _store(
        self, after: DeliveryRecord, claimed: DeliveryRecord, *, sent: bool, permanent: bool = False
    ) -> DeliveryRecord:
        now = self._clock()
        event = notification_event(
            after.notification,
            sent=sent,
            destination=after.destination or "-",
            attempts=len(after.attempts),
            at=now,
            error=after.error or "",
            permanent=permanent,
        )
        envelopes = sequenced(after.key, claimed.version, [event], source=SOURCE, time=now)
        await self._notify.deliveries.save(after, claimed.version, envelopes)
        _count(after, "sent" if sent else "failed")
        return after

    async def _fail(
        self, claimed: DeliveryRecord, error: str, *, destination: str, permanent: bool
    ) -> DeliveryRecord:
        after = replace(
            claimed,
            version=claimed.version + 1,
            status="failed",
            next_attempt_at=None,
            lease_until=None,
            error=error,
            destination=destination,
        )
        await self._dead_letter_record(after, error, permanent=permanent)
        return await self._store(after, claimed, sent=False, permanent=permanent)

    async def _close(self, claimed: DeliveryRecord, status: LogStatus, why: str) -> DeliveryRecord:
        after = replace(
            claimed,
            version=claimed.version + 1,
            status=status,
            next_attempt_at=None,
            lease_until=None,
            error=why,
        )
        await self._notify.deliveries.save(after, claimed.version, [])
        _count(after, status)
        log.info("notify.delivery_skipped", key=after.key, status=status, reason=why)
        return after

    async def _later(self, claimed: DeliveryRecord, at: datetime) -> DeliveryRecord:
        """Held back (rate limit, open breaker) without using up an attempt."""
        after = replace(claimed, version=claimed.version + 1, next_attempt_at=at, lease_until=None)
        await self._notify.deliveries.save(after, claimed.version, [])
        return after

    async def _dead_letter_record(
        self, failed: DeliveryRecord, error: str, *, permanent: bool
    ) -> None:
        """Published before the failed state is stored: a crash in between publishes it
        again (at least once), never not at all."""
        event = notification_event(
            failed.notification,
            sent=False,
            destination=failed.destination or "-",
            attempts=len(failed.attempts),
            at=self._clock(),
            error=error,
            permanent=permanent,
        )
        envelope = sequenced(
            failed.key, failed.version, [event], source=SOURCE, time=self._clock()
        )[0]
        record = encode(envelope)
        attempts = [
            {"at": a.at.isoformat(), "outcome": a.outcome, "detail": a.detail}
            for a in failed.attempts
        ]
        headers = (
            *record.headers,
            (DeadLetterHeaders.ERROR, f"notification failed: {error}"[:400].encode()),
            (DeadLetterHeaders.GROUP, DEAD_LETTER_GROUP.encode()),
            ("notify-attempts", json.dumps(attempts).encode()),
        )
        await self._dead_letter(KafkaRecord(record.key, record.value, headers))
        DEAD_LETTERED.labels("", DEAD_LETTER_GROUP).inc()  # no source record: a delivery


def _count(record: DeliveryRecord, outcome: str) -> None:
    """Counted once the outcome is stored (a lost lease race stores, and counts, nothing)."""
    NOTIFICATIONS.labels(record.notification.channel, outcome).inc()
