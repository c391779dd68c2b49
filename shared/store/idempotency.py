"""Idempotent creates: a client that sends `Idempotency-Key` with a create can repeat the request
(after a timeout, a lost answer, a restart) and get the same aggregate, not a second one.

The key's aggregate id is derived from the caller and the key (a name-based UUID in the
aggregate kind's namespace), so the store's unique `_id` is what makes the create happen once,
also when two copies of the request race or a timed-out insert lands late. The request's digest
is kept beside it, so the same key with another request is refused (422) instead of answered
with an aggregate it did not ask for. Keys are kept for good: a repeat is answered however late.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar

from shared.errors import Invalid
from shared.store.errors import AlreadyExists, translated_errors
from shared.store.repository import AggregateRepository

HEADER = "Idempotency-Key"
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # visible ASCII, as the header field draft suggests
HEADER_DESCRIPTION = "Repeat the request with the same key to get the same answer, once"
REPLAYED = "Idempotent-Replayed"

A = TypeVar("A")


@dataclass(frozen=True)
class IdempotencyKey:
    aggregate_id: str
    digest: str

    @classmethod
    def of(cls, namespace: uuid.UUID, caller: str, key: str, command: Any) -> IdempotencyKey:
        """The key of `caller`'s create `command` (a dataclass) among one kind's aggregates."""
        aggregate_id = str(uuid.uuid5(namespace, f"{caller}\n{key}"))
        request = json.dumps(asdict(command), sort_keys=True, default=str)
        return cls(aggregate_id, hashlib.sha256(request.encode()).hexdigest())


async def claimed_digest(keys: Any, key: IdempotencyKey, now: datetime) -> str:
    """The digest of the request the key's aggregate is created from: this one if it is the
    first to claim the key, else the first's (one insert by `_id`, so two requests racing on one
    key agree on the winner)."""
    try:
        async with translated_errors():
            await keys.insert_one({"_id": key.aggregate_id, "digest": key.digest, "at": now})
        return key.digest
    except AlreadyExists:
        async with translated_errors():
            claimed = await keys.find_one({"_id": key.aggregate_id})
        return key.digest if claimed is None else str(claimed["digest"])


async def create_once(
    repo: AggregateRepository[A],
    keys: Any,
    key: IdempotencyKey,
    create: Callable[[str], Awaitable[A]],
    *,
    now: datetime,
) -> tuple[A, bool]:
    """Create the aggregate (`create` with the key's id) unless a request with the same key
    already did: the aggregate, and whether it was there already. A key used again with
    another request is refused."""
    if await claimed_digest(keys, key, now) != key.digest:
        raise Invalid(f"this {HEADER} was used with a different request")
    existing = await repo.get(key.aggregate_id)
    if existing is not None:
        return existing, True
    try:
        return await create(key.aggregate_id), False
    except AlreadyExists:  # a copy of this request created it meanwhile
        existing = await repo.get(key.aggregate_id)
        if existing is None:
            raise
        return existing, True
