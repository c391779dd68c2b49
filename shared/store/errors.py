"""Storage errors in the platform's terms (not the driver's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError

from shared.bus.port import TransientError


class ConcurrencyConflict(Exception):
    """The aggregate changed since it was read: its version is no longer the expected one."""

    def __init__(self, aggregate_id: str, expected_version: int) -> None:
        super().__init__(f"{aggregate_id} is no longer at version {expected_version}")
        self.aggregate_id = aggregate_id
        self.expected_version = expected_version


class AlreadyExists(Exception):
    pass


class StoreUnavailable(TransientError):
    """MongoDB cannot be reached; callers answer 503 or retry later."""


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    try:
        yield
    except DuplicateKeyError as exc:
        raise AlreadyExists(str(exc)) from exc
    except ConnectionFailure as exc:  # includes AutoReconnect, ServerSelectionTimeoutError
        raise StoreUnavailable(f"MongoDB unavailable: {type(exc).__name__}") from exc
    except PyMongoError as exc:
        if getattr(exc, "timeout", False):
            raise StoreUnavailable(f"MongoDB timed out: {type(exc).__name__}") from exc
        raise
