"""PyMongo async client factory (PyMongo's AsyncMongoClient replaces the deprecated motor)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient


def create_client(url: str, *, app_name: str, timeout_ms: int = 5_000) -> AsyncMongoClient[Any]:
    """A client with bounded timeouts, so a missing server turns into a quick error (and a 503)
    instead of a request hanging for the driver's 30-second default."""
    return AsyncMongoClient(
        url,
        appname=app_name,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 2, 10_000),
    )


async def ping(client: Any) -> bool:
    try:
        await client.admin.command("ping")
    except Exception:
        return False
    return True
