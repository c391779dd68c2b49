"""A small world in each service for the security tests: the people below, and one object of
each kind a "by id" route reads, created through the API as its users would (the SLA timer and
the escalation from the facts their services consume). `seed` answers the id of each, by the
name of the path parameter that addresses it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from services.notify import handlers as notify_handlers
from services.notify.routing import ACK_PATH
from services.sla import handlers as sla_handlers
from shared.contracts.sla import SlaStarted
from tests.security.services import Tokens
from tests.support.notify import assigned, breach, group_saved, ladder, sla_fact

# persona -> (subject, role)
PEOPLE = {
    "admin": ("root", "admin"),
    "owner": ("rita", "requester"),  # requests the seeded incident and change
    "stranger": ("sam", "requester"),
    "member": ("ann", "agent"),  # in the incident's group; paged for the escalation
    "outsider": ("otto", "agent"),  # in another group; paged for nothing
    "manager": ("maria", "manager"),
    "change_manager": ("carl", "change-manager"),
    "machine": ("monitor", "service"),
}
TICKET = "INC-SEC-1"  # the ticket whose SLA timer and escalation are seeded

Ids = dict[str, str]


class Seeder:
    def __init__(self, client: httpx.AsyncClient, tokens: Tokens) -> None:
        self.client = client
        self.tokens = tokens

    def headers(self, persona: str) -> dict[str, str]:
        return self.tokens.headers(*PEOPLE[persona])

    async def call(
        self, method: str, url: str, persona: str, body: Any = None, expect: int = 200
    ) -> dict[str, Any]:
        response = await self.client.request(method, url, json=body, headers=self.headers(persona))
        assert response.status_code == expect, f"{method} {url}: {response.text}"
        return response.json() if response.content else {}


async def seed_incidents(s: Seeder, app: FastAPI) -> Ids:
    for group in (
        {"name": "service-desk", "tier": "L1", "members": ["ann"], "manager": "maria"},
        {"name": "network", "tier": "L2", "members": ["otto"], "manager": "maria"},
    ):
        await s.call("POST", "/api/v1/groups", "admin", group, 201)
    incident = await s.call(
        "POST", "/api/v1/incidents", "owner", {"title": "VPN drops", "impact": 2, "urgency": 2},
        201,
    )  # fmt: skip
    await s.call(
        "POST", f"/api/v1/incidents/{incident['id']}/assignment", "manager",
        {"group": "service-desk"},
    )  # fmt: skip
    other = await s.call(
        "POST", "/api/v1/incidents", "stranger", {"title": "Printer jam", "impact": 3}, 201
    )
    await s.call(
        "POST", f"/api/v1/incidents/{other['id']}/assignment", "manager", {"group": "network"}
    )
    # `other_incident` names no path parameter: only the object-level tests use it.
    return {"incident_id": incident["id"], "name": "service-desk", "other_incident": other["id"]}


async def seed_changes(s: Seeder, app: FastAPI) -> Ids:
    await s.call("POST", "/api/v1/configuration-items", "admin", {"name": "rtr-1"}, 201)
    await s.call("PUT", "/api/v1/approval-groups/cab", "admin", {"members": ["carla"]})
    change = await s.call(
        "POST", "/api/v1/changes", "owner",
        {"title": "Upgrade router firmware", "change_type": "normal", "implementer": "ivan",
         "configuration_items": ["rtr-1"],
         "plan": {"implementation": "flash", "backout": "reflash", "test": "ping"}},
        201,
    )  # fmt: skip
    return {"change_id": change["id"], "name": "cab"}


async def seed_sla(s: Seeder, app: FastAPI) -> Ids:
    office = {
        "id": "office", "name": "Office", "time_zone": "Europe/Berlin",
        "hours": {d: ["08:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
    }  # fmt: skip
    await s.call("POST", "/api/v1/sla/calendars", "admin", office, 201)
    policy = {
        "id": "p1-incidents", "name": "P1 incidents", "ticket_type": "incident",
        "priority": "P1", "first_response_seconds": 900, "resolution_seconds": 14400,
        "calendar_id": "office",
    }  # fmt: skip
    await s.call("POST", "/api/v1/sla/policies", "admin", policy, 201)
    now = datetime.now(UTC)
    model = app.state.sla_read_model
    # Who works the ticket, as the incident events tell the SLA API: ann's L1 desk has it.
    for event in (
        group_saved("service-desk", "L1", ["ann"]),
        group_saved("network", "L2", ["otto"]),
        assigned(TICKET, 2, "service-desk"),
    ):
        assert await sla_handlers.on_incident_event(model, event, now=now)
    started = await sla_handlers.on_sla_fact(model, sla_fact(SlaStarted, TICKET, now), now=now)
    assert started
    return {"ticket_id": TICKET, "calendar_id": "office", "policy_id": "p1-incidents"}


async def seed_notify(s: Seeder, app: FastAPI) -> Ids:
    await s.call("POST", "/api/v1/notify/policies", "admin", ladder(first="ann"), 201)
    rotation = {
        "id": "ops", "name": "Ops", "zone": "Europe/Berlin", "participants": ["ann", "otto"],
        "handoff_weekday": 0, "handoff_time": "09:00", "starts": "2026-03-02",
    }  # fmt: skip
    await s.call("POST", "/api/v1/notify/rotations", "admin", rotation, 201)
    await s.call("PUT", "/api/v1/notify/people/ann", "member", {"email": "ann@example.com"})
    await s.call("PUT", "/api/v1/notify/groups/oncall", "admin", {"members": ["ann"]})
    await s.call(
        "PUT",
        "/api/v1/notify/subscriptions/mine/p1_opened",
        "member",
        {"channels": ["email"], "services": ["payroll-db"]},
    )
    notify = app.state.notify
    now = datetime.now(UTC)
    await notify_handlers.on_sla_event(notify, breach(TICKET, now), now=now)
    stored = await notify.escalations.get(TICKET)
    escalation_id = stored.book.escalations[0].id
    link = app.state.notify_links.ack(escalation_id, "ann", now)
    return {
        "policy_id": "breach-ladder",
        "version": "1",
        "rotation_id": "ops",
        "user_id": "ann",
        "name": "oncall",
        "kind": "p1_opened",
        "escalation_id": escalation_id,
        "token": link.split(ACK_PATH, 1)[1],
    }


SEEDS: dict[str, Callable[[Seeder, FastAPI], Any]] = {
    "incidents": seed_incidents,
    "changes": seed_changes,
    "sla": seed_sla,
    "notify": seed_notify,
}


async def seed(service: str, app: FastAPI, client: httpx.AsyncClient, tokens: Tokens) -> Ids:
    """Create the world of `service` through `client` (the app's lifespan must be running)."""
    ids: Ids = await SEEDS[service](Seeder(client, tokens), app)
    return ids


def seeded_on_startup(app: FastAPI, service: str, tokens: Tokens, into: Ids) -> None:
    """Seed the world inside the app's own lifespan, on whatever event loop runs it (the fuzzer
    runs apps on its own thread), and put the ids into `into`."""
    original: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with original(application) as state:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://seed") as client:
                into.update(await seed(service, app, client, tokens))
            yield state

    app.router.lifespan_context = lifespan
