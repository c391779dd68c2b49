"""The delivery log: one document per notification, `_id` = its dedup key.

The unique `_id` is what makes "a redelivered event never notifies anyone twice" hold across
restarts and replicas: a notification is inserted once, and inserting the same key again is a
no-op. Each document records the attempts (time, outcome, detail), the status, when to try
next, and carries the notification_sent / notification_failed facts in its outbox.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from services.notify.documents import must_utc, utc
from services.notify.domain.delivery import Attempt, Delivery
from services.notify.domain.model import Notification
from shared.store.errors import AlreadyExists, translated_errors
from shared.store.repository import AggregateRepository
from shared.telemetry import trace_reference

LogStatus = Literal["pending", "retrying", "sent", "failed", "cancelled", "dropped"]
DUE: tuple[LogStatus, ...] = ("pending", "retrying")
FINAL: frozenset[LogStatus] = frozenset({"sent", "failed", "cancelled", "dropped"})


@dataclass(frozen=True)
class DeliveryRecord:
    """A notification and what became of it. `cancelled`: its escalation was acknowledged or
    settled before it went out; `dropped`: over the rate limit beyond the longest wait."""

    notification: Notification
    version: int = 1
    status: LogStatus = "pending"
    attempts: tuple[Attempt, ...] = ()
    next_attempt_at: datetime | None = None
    endpoint: str | None = None  # the breaker's key: host[:port], never a secret
    destination: str | None = None  # an e-mail address or a host: never a secret
    rate_slot: datetime | None = None  # a reserved rate-limit slot, taken already
    lease_until: datetime | None = None  # a worker is sending it until then
    error: str | None = None
    trace: str = ""  # the trace it belongs to (shared.telemetry.trace_reference)

    @property
    def key(self) -> str:
        return self.notification.key

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def as_delivery(self) -> Delivery:
        status = (
            self.status if self.status in ("pending", "retrying", "sent", "failed") else "failed"
        )
        return Delivery(
            key=self.key,
            endpoint=self.endpoint or "",
            status=status,  # type: ignore[arg-type]
            attempts=self.attempts,
            next_attempt_at=self.next_attempt_at,
        )

    def after(self, delivery: Delivery, **changes: Any) -> DeliveryRecord:
        return replace(
            self,
            version=self.version + 1,
            status=delivery.status,
            attempts=delivery.attempts,
            next_attempt_at=delivery.next_attempt_at,
            **changes,
        )


def new_record(notification: Notification, trace: str = "") -> DeliveryRecord:
    return DeliveryRecord(notification, next_attempt_at=notification.deliver_at, trace=trace)


def _notification_document(n: Notification) -> dict[str, Any]:
    return {
        "event_id": n.event_id,
        "event_type": n.event_type,
        "ticket_id": n.ticket_id,
        "priority": n.priority,
        "recipient": n.recipient,
        "channel": n.channel,
        "reason": n.reason,
        "created_at": n.created_at,
        "deliver_at": n.deliver_at,
        "step": n.step,
        "escalation_id": n.escalation_id,
        "level": n.level,
        "round": n.round,
        "subscription": n.subscription,
    }


class DeliveryRepository(AggregateRepository[DeliveryRecord]):
    collection_name = "notify_deliveries"

    def to_document(self, aggregate: DeliveryRecord) -> dict[str, Any]:
        return {
            "_id": aggregate.key,
            "version": aggregate.version,
            **_notification_document(aggregate.notification),
            "status": aggregate.status,
            "attempts": [
                {"at": a.at, "outcome": a.outcome, "detail": a.detail} for a in aggregate.attempts
            ],
            "next_attempt_at": aggregate.next_attempt_at,
            "endpoint": aggregate.endpoint,
            "destination": aggregate.destination,
            "rate_slot": aggregate.rate_slot,
            "lease_until": aggregate.lease_until,
            "error": aggregate.error,
            "trace": aggregate.trace,
        }

    def from_document(self, document: dict[str, Any]) -> DeliveryRecord:
        notification = Notification(
            key=document["_id"],
            event_id=document["event_id"],
            event_type=document["event_type"],
            ticket_id=document["ticket_id"],
            priority=document["priority"],
            recipient=document["recipient"],
            channel=document["channel"],
            reason=document["reason"],
            created_at=must_utc(document["created_at"]),
            deliver_at=must_utc(document["deliver_at"]),
            step=int(document.get("step", 0)),
            escalation_id=document.get("escalation_id"),
            level=document.get("level"),
            round=document.get("round"),
            subscription=document.get("subscription"),
        )
        return DeliveryRecord(
            notification=notification,
            version=int(document["version"]),
            status=document["status"],
            attempts=tuple(
                Attempt(must_utc(a["at"]), a["outcome"], a.get("detail", ""))
                for a in document.get("attempts", ())
            ),
            next_attempt_at=utc(document.get("next_attempt_at")),
            endpoint=document.get("endpoint"),
            destination=document.get("destination"),
            rate_slot=utc(document.get("rate_slot")),
            lease_until=utc(document.get("lease_until")),
            error=document.get("error"),
            trace=document.get("trace") or "",
        )

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("status", 1), ("next_attempt_at", 1)])
        await self.collection.create_index([("ticket_id", 1), ("created_at", 1)])

    async def insert_new(
        self, notifications: list[Notification], *, trace: str | None = None
    ) -> list[DeliveryRecord]:
        """Log each notification whose key is new; the records inserted (a key seen before is
        a redelivery, and is skipped). Each joins `trace`, by default the current one."""
        inserted: list[DeliveryRecord] = []
        reference = trace_reference() if trace is None else trace
        for notification in notifications:
            record = new_record(notification, reference)
            try:
                await self.add(record, [])
            except AlreadyExists:
                continue
            inserted.append(record)
        return inserted

    async def due(self, now: datetime, limit: int) -> list[DeliveryRecord]:
        """Deliveries to try now: pending or retrying, their time come, not leased."""
        query = {"status": {"$in": list(DUE)}, "next_attempt_at": {"$lte": now}}
        found, _ = await self.find(
            query, sort=(("next_attempt_at", 1), ("_id", 1)), limit=limit * 2, count=False
        )
        free = [r for r in found if r.lease_until is None or r.lease_until <= now]
        return free[:limit]

    async def next_due_at(self) -> datetime | None:
        async with translated_errors():
            found = (
                await self.collection.find({"status": {"$in": list(DUE)}}, {"next_attempt_at": 1})
                .sort([("next_attempt_at", 1)])
                .limit(1)
                .to_list()
            )
        return utc(found[0].get("next_attempt_at")) if found else None

    async def of_ticket(
        self, ticket_id: str, *, recipient: str | None, skip: int, limit: int
    ) -> tuple[list[DeliveryRecord], int]:
        query: dict[str, Any] = {"ticket_id": ticket_id}
        if recipient is not None:
            query["recipient"] = recipient
        return await self.find(query, sort=(("created_at", 1), ("_id", 1)), skip=skip, limit=limit)
