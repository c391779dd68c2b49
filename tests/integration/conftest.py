"""Fixtures for tests against the real local stack (`python -m devtools.localstack up`).

The addresses come from ITSM_KAFKA_BOOTSTRAP / ITSM_MONGO_URL (what `localstack env` prints),
defaulting to the local stack's default ports. An unreachable server fails the test with the
command to run; it is never skipped.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from shared.bus.kafka import KafkaBus
from shared.ids import uuid7
from shared.store.mongo import create_client, ping

START_HINT = "start the local stack first: python -m devtools.localstack up (or make test)"


@pytest.fixture(scope="session")
def mongo_url() -> str:
    return os.environ.get("ITSM_MONGO_URL", "mongodb://127.0.0.1:27017")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return os.environ.get("ITSM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


@asynccontextmanager
async def scratch_database(mongo_url: str) -> AsyncIterator[Any]:
    """A fresh database on the real server, dropped afterwards."""
    client = create_client(mongo_url, app_name="tests", timeout_ms=3_000)
    try:
        if not await ping(client):
            pytest.fail(f"no MongoDB-compatible server at {mongo_url}; {START_HINT}")
        name = f"t_{uuid7().replace('-', '')[-16:]}"
        yield client[name]
        await client.drop_database(name)
    finally:
        await client.close()


@pytest.fixture
async def mongo_db(mongo_url: str) -> AsyncIterator[Any]:
    async with scratch_database(mongo_url) as database:
        yield database


@pytest.fixture
async def kafka_bus(kafka_bootstrap: str) -> AsyncIterator[KafkaBus]:
    bus = KafkaBus(kafka_bootstrap, client_id=f"tests-{uuid7()[-8:]}", start_timeout=10)
    try:
        await bus.start()
    except Exception as exc:
        pytest.fail(f"no Kafka broker at {kafka_bootstrap} ({exc!r}); {START_HINT}")
    yield bus
    await bus.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and database names."""
    return uuid7().replace("-", "")[-12:]
