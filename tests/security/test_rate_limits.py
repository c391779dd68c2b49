"""Per-client rate limits, on real servers over loopback: a client flooding one endpoint is
answered 429 problem+json with Retry-After, while other clients, the same client's other
buckets, the probes and another service keep being served.

The rates are tiny (one token per 100 s), so a flood empties a bucket and nothing refills it
during the test however slow the machine: the counts are exact, with no timing in them."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shared.runtime import in_memory
from tests.security.services import FACTORIES, Tokens, settings_for
from tests.support.apps import client_from, http_server

BURST = 6  # API bucket
INTAKE_BURST = 3  # the stricter alert intake bucket
SLOW = 0.01  # tokens per second: nothing refills during a test
ALERTS = "/api/v1/alerts/alertmanager"
INCIDENTS = "/api/v1/incidents"


def limited_app(service: str, signing_key: str) -> FastAPI:
    settings = settings_for(service, signing_key).model_copy(
        update={
            "api_rate_per_second": SLOW,
            "api_rate_burst": BURST,
            "intake_rate_per_second": SLOW,
            "intake_rate_burst": INTAKE_BURST,
        }
    )
    return FACTORIES[service](settings, in_memory(settings))


@dataclass
class Servers:
    incidents: httpx.AsyncClient
    changes: httpx.AsyncClient
    tokens: Tokens

    def auth(self, subject: str, *roles: str) -> dict[str, str]:
        return self.tokens.headers(subject, *roles)

    def from_address(self, address: str) -> httpx.AsyncClient:
        """A client of the incidents server from another source address."""
        return client_from(address, str(self.incidents.base_url))


@pytest.fixture
async def servers(signing_key: str) -> AsyncIterator[Servers]:
    async with AsyncExitStack() as stack:
        incidents = await stack.enter_async_context(
            http_server(limited_app("incidents", signing_key))
        )
        changes = await stack.enter_async_context(http_server(limited_app("changes", signing_key)))
        yield Servers(incidents, changes, Tokens(signing_key))


def alert(fingerprint: str) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "itsm",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "severity": "critical"},
                "annotations": {"summary": "Disk full"},
                "startsAt": "2026-12-04T08:50:00Z",
                "fingerprint": fingerprint,
            }
        ],
    }


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    retry_after = response.headers["retry-after"]
    # one token per 100 s: the next one is at most 100 s away, and at least 1 s is announced
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 100
    problem = response.json()
    assert problem["status"] == 429 and "retry in" in problem["detail"]


async def test_a_flood_of_alert_intake_is_refused_for_that_client_only(servers: Servers) -> None:
    monitoring = servers.auth("prometheus-a", "service")
    statuses = []
    for i in range(INTAKE_BURST + 4):
        response = await servers.incidents.post(ALERTS, json=alert(f"fp-{i}"), headers=monitoring)
        statuses.append(response.status_code)
    assert statuses == [202] * INTAKE_BURST + [429] * 4
    assert_limited(response)
    # Another sender's alerts are still taken.
    other = servers.auth("prometheus-b", "service")
    accepted = await servers.incidents.post(ALERTS, json=alert("fp-b"), headers=other)
    assert accepted.status_code == 202
    # The flooding sender's other endpoints draw on its API bucket, which is untouched.
    recorded = await servers.incidents.post(
        INCIDENTS, json={"title": "recorded by a machine", "impact": 3, "urgency": 3},
        headers=monitoring,
    )  # fmt: skip
    assert recorded.status_code == 201, recorded.text
    # Probes are never limited, and another service knows nothing of the flood.
    assert (await servers.incidents.get("/livez")).status_code == 200
    changes = await servers.changes.get("/api/v1/changes", headers=servers.auth("a", "agent"))
    assert changes.status_code == 200


async def test_a_flood_of_one_api_endpoint_is_refused_for_that_client_only(
    servers: Servers,
) -> None:
    alice = servers.auth("alice", "requester")
    statuses = [
        (await servers.incidents.get(INCIDENTS, headers=alice)).status_code
        for _ in range(BURST + 3)
    ]
    assert statuses == [200] * BURST + [429] * 3
    # Every endpoint of the service draws on alice's one API bucket ...
    assert_limited(await servers.incidents.get(f"{INCIDENTS}/no-such-id", headers=alice))
    # ... but another user (from the same address), another service and the probes are served.
    bob = servers.auth("bob", "requester")
    assert (await servers.incidents.get(INCIDENTS, headers=bob)).status_code == 200
    created = await servers.incidents.post(
        INCIDENTS, json={"title": "bob's printer", "impact": 3, "urgency": 3}, headers=bob
    )
    assert created.status_code == 201
    assert (await servers.incidents.get("/readyz")).status_code == 200
    assert (await servers.incidents.get("/metrics")).status_code == 200
    assert (await servers.changes.get("/api/v1/changes", headers=alice)).status_code == 200


async def test_clients_without_a_valid_token_are_limited_by_source_address(
    servers: Servers,
) -> None:
    """Forged tokens (another key, a new subject each time) and a spoofed X-Forwarded-For
    (no proxy is trusted) don't buy a fresh bucket: the address is the client."""
    forger = Tokens(secrets.token_urlsafe(48))
    async with servers.from_address("127.0.0.2") as mallory:
        statuses = []
        for i in range(BURST + 3):
            headers = {
                **forger.headers(f"mallory-{i}", "admin"),
                "X-Forwarded-For": f"203.0.113.{i}",
            }
            statuses.append((await mallory.get(INCIDENTS, headers=headers)).status_code)
        assert statuses == [401] * BURST + [429] * 3
        assert_limited(await mallory.get(INCIDENTS))
        assert (await mallory.get("/livez")).status_code == 200
        # A valid token is a client of its own, wherever it comes from.
        carol = servers.auth("carol", "requester")
        assert (await mallory.get(INCIDENTS, headers=carol)).status_code == 200
    async with servers.from_address("127.0.0.3") as neighbour:
        assert (await neighbour.get(INCIDENTS)).status_code == 401  # refused, not throttled
