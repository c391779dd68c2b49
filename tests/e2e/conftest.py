"""End-to-end tests: every service as its own process (`python -m devtools.stack`), on a private
Kafka and FerretDB that each test module starts on free loopback ports and stops afterwards.

Each module owns its broker, so the fault test may kill and restart it without touching anyone
else's tests (the shared stack on 9092/27017 is not used at all), and no ordering of the suite
is needed. Java, Maven and Go must be there to provision Kafka and FerretDB once into the cache,
as for `make test`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.support.stack import PrivateStack, private_stack


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: every service as its own process on a private Kafka and FerretDB"
    )


@asynccontextmanager
async def stack_for(
    request: pytest.FixtureRequest, tmp: Path, extra_env: Mapping[str, str]
) -> AsyncIterator[PrivateStack]:
    """A private stack for a module; the tails of its logs are printed when a test failed."""
    failed_before = request.session.testsfailed
    async with private_stack(tmp, extra_env) as stack:
        yield stack
        if request.session.testsfailed > failed_before:
            print(f"\n===== logs of the private stack in {stack.state} =====", file=sys.stderr)
            print(stack.tails(40), file=sys.stderr)
