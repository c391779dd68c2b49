"""Storage: PyMongo's async client, aggregate repositories with optimistic concurrency, the
single-document outbox and its relay, and an in-memory twin of the collection API."""

from shared.store.errors import AlreadyExists, ConcurrencyConflict, StoreUnavailable
from shared.store.relay import OutboxRelay
from shared.store.repository import AggregateRepository

__all__ = [
    "AggregateRepository",
    "AlreadyExists",
    "ConcurrencyConflict",
    "OutboxRelay",
    "StoreUnavailable",
]
