"""The policy API on the in-memory adapters: versioned CRUD with If-Match, validation as
problem+json, who may do what, and every version on the policies topic."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.sla.policies.api import router
from services.sla.policies.catalog import PolicyLog
from services.sla.policies.wiring import build
from services.sla.processor.catalog import default_catalog
from shared.bus.memory import InMemoryBus
from shared.contracts.codec import decode
from shared.contracts.topics import Topic
from shared.runtime import in_memory, service_app
from shared.settings import ServiceSettings
from tests.support.apps import asgi_client
from tests.support.polling import eventually

Auth = Callable[..., dict[str, str]]
BASE = "/api/v1/sla"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PEOPLE = {
    "admin": ("ada", "admin"),
    "manager": ("max", "manager"),
    "agent": ("ann", "agent"),
    "requester": ("rita", "requester"),
    "machine": ("ci", "service"),
}
OFFICE = {
    "id": "office",
    "name": "Berlin office",
    "time_zone": "Europe/Berlin",
    "hours": {d: ["08:00-12:00", "13:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
    "holidays": [{"date": "2026-12-25", "name": "Christmas"}],
}
P1 = {
    "id": "p1-incidents",
    "name": "P1 incidents",
    "ticket_type": "incident",
    "priority": "P1",
    "first_response_seconds": 900,
    "resolution_seconds": 14400,
    "calendar_id": "office",
}


class Api:
    def __init__(self, client: httpx.AsyncClient, auth: Auth, bus: InMemoryBus) -> None:
        self.client = client
        self.auth = auth
        self.bus = bus

    async def call(
        self, method: str, url: str, persona: str | None = "admin", body: Any = None,
        expect: int = 200, headers: dict[str, str] | None = None, **params: Any,
    ) -> httpx.Response:  # fmt: skip
        who = self.auth(*PEOPLE[persona]) if persona else {}
        response = await self.client.request(
            method, BASE + url, json=body, headers={**who, **(headers or {})}, params=params
        )
        assert response.status_code == expect, response.text
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json"
        return response

    async def published(self, count: int) -> list[Any]:
        async def records() -> list[Any]:
            return self.bus.records(Topic.SLA_POLICIES)

        found = await eventually(records, until=lambda r: len(r) >= count, timeout=5)
        return found


@pytest.fixture
async def api(settings: ServiceSettings, auth: Auth) -> AsyncIterator[Api]:
    bus = InMemoryBus()
    runtime = in_memory(settings, bus)
    runtime.clock = lambda: NOW
    app = service_app(title="SLA policies", settings=settings, routers=[router], build=build, runtime=runtime)  # fmt: skip
    async with asgi_client(app) as client:
        yield Api(client, auth, bus)


async def test_a_calendar_is_versioned_and_guarded_by_if_match(api: Api) -> None:
    created = await api.call("POST", "/calendars", body=OFFICE, expect=201)
    assert created.headers["ETag"] == '"1"'
    assert created.headers["Location"] == f"{BASE}/calendars/office"
    assert created.json()["version"] == 1 and created.json()["status"] == "active"

    update = {k: v for k, v in OFFICE.items() if k != "id"} | {"holidays": []}
    missing = await api.call("PUT", "/calendars/office", body=update, expect=428)
    assert "If-Match" in missing.json()["detail"]
    stale = await api.call(
        "PUT", "/calendars/office", body=update, expect=412, headers={"If-Match": '"7"'}
    )
    assert stale.json()["current_version"] == 1
    revised = await api.call("PUT", "/calendars/office", body=update, headers={"If-Match": '"1"'})
    assert revised.headers["ETag"] == '"2"' and revised.json()["holidays"] == []

    first = await api.call("GET", "/calendars/office", "agent", version=1)
    assert first.json()["holidays"] == OFFICE["holidays"] and first.headers["ETag"] == '"2"'
    history = (await api.call("GET", "/calendars/office/versions", "agent")).json()
    assert [v["version"] for v in history["items"]] == [1, 2] and history["total"] == 2
    await api.call("GET", "/calendars/office", "agent", expect=404, version=3)
    await api.call("GET", "/calendars/nowhere", "agent", expect=404)
    await api.call("POST", "/calendars", body=OFFICE, expect=409)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"time_zone": "Europe/Atlantis"}, "unknown time zone 'Europe/Atlantis'"),
        ({"hours": {"mon": ["08:00-12:00", "11:00-17:00"]}}, "non-overlapping"),
        ({"hours": {"mon": ["9-5"]}}, "must look like 08:00-17:00"),
        ({"hours": {}}, "no working hours"),
        ({"hours": {"someday": ["08:00-17:00"]}}, "hours.someday"),
        ({"id": "Not A Slug"}, "body.id"),
    ],
)
async def test_bad_calendars_are_refused_with_what_is_wrong(
    api: Api, change: dict[str, Any], message: str
) -> None:
    refused = await api.call("POST", "/calendars", body=OFFICE | change, expect=422)
    assert message in refused.json()["detail"]


async def test_a_policy_lives_through_versions_to_retirement(api: Api) -> None:
    await api.call("POST", "/calendars", body=OFFICE, expect=201)
    created = await api.call("POST", "/policies", "manager", body=P1, expect=201)
    assert created.json() | {"recorded_at": None} == {
        **P1, "version": 1, "status": "active", "kind": "sla", "service": None, "group": None,
        "target_seconds": None, "warnings": [50, 75, 90],
        "pause_on": ["awaiting_change", "awaiting_requester", "awaiting_vendor"],
        "effective_from": "2026-03-02T09:00:00Z", "recorded_at": None, "recorded_by": "max",
    }  # fmt: skip
    later = (NOW + timedelta(days=7)).isoformat()
    body = {k: v for k, v in P1.items() if k != "id"} | {
        "resolution_seconds": 7200,
        "effective_from": later,
    }
    revised = await api.call(
        "PUT", "/policies/p1-incidents", body=body, headers={"If-Match": '"1"'}
    )
    assert (
        revised.json()["version"] == 2
        and revised.json()["effective_from"] == "2026-03-09T09:00:00Z"
    )

    retired = await api.call("DELETE", "/policies/p1-incidents", "manager", effective_from=later)
    assert retired.json()["version"] == 3 and retired.json()["status"] == "retired"
    again = await api.call(
        "PUT", "/policies/p1-incidents", body=body, expect=409, headers={"If-Match": '"3"'}
    )
    assert again.json()["allowed_actions"] == []
    history = (await api.call("GET", "/policies/p1-incidents/versions", "agent")).json()
    assert [(v["version"], v["status"], v["resolution_seconds"]) for v in history["items"]] == [
        (1, "active", 14400), (2, "active", 7200), (3, "retired", 7200),
    ]  # fmt: skip

    records = await api.published(4)
    assert sorted(r.key.decode() for r in records) == [
        "calendar:office:1", "policy:p1-incidents:1", "policy:p1-incidents:2",
        "policy:p1-incidents:3",
    ]  # fmt: skip
    # What a worker reads back from the topic measures P1 incidents with version 2 next week.
    log = PolicyLog(default_catalog())
    for record in records:
        envelope = decode(record)
        log.add(envelope.type, envelope.data)
    catalog = log.catalog()
    chosen = [
        catalog.sla_policy("incident", "P1", None, None, at=NOW + timedelta(days=d)) for d in (0, 7)
    ]
    assert [(p.id, p.version, p.resolution) for p in chosen if p] == [
        ("p1-incidents", 1, timedelta(hours=4)), ("default-incident-p1", 1, timedelta(hours=4)),
    ]  # fmt: skip


async def test_bad_policies_are_refused_with_what_is_wrong(api: Api) -> None:
    await api.call("POST", "/calendars", body=OFFICE, expect=201)
    cases = [
        (P1 | {"calendar_id": "nights"}, "unknown calendar 'nights'"),
        (P1 | {"warnings": [90, 50]}, "increasing percentages"),
        (P1 | {"warnings": [50, 150]}, "between 1 and 99"),
        (P1 | {"priority": None}, "ticket_type and a priority"),
        (P1 | {"first_response_seconds": 0}, "body.first_response_seconds"),
        (P1 | {"effective_from": "2026-03-01T00:00:00Z"}, "is in the past"),
        (P1 | {"kind": "ola", "ticket_type": None, "priority": None}, "needs the assignment group"),
        (P1 | {"pause_on": ["coffee_break"]}, "body.pause_on"),
    ]
    for body, message in cases:
        refused = await api.call("POST", "/policies", body=body, expect=422)
        assert message in refused.json()["detail"], (body, refused.json())
    await api.call("POST", "/policies", body=P1, expect=201)
    duplicate = await api.call("POST", "/policies", body=P1 | {"id": "p1-again"}, expect=422)
    assert (
        "p1-incidents already covers SLA ticket_type=incident, priority=P1"
        in duplicate.json()["detail"]
    )
    moved = {k: v for k, v in P1.items() if k != "id"} | {"priority": "P2"}
    refused = await api.call(
        "PUT", "/policies/p1-incidents", body=moved, expect=422, headers={"If-Match": '"1"'}
    )
    assert "cannot change" in refused.json()["detail"]


async def test_an_ola_policy_and_the_list_filters(api: Api) -> None:
    await api.call("POST", "/calendars", body=OFFICE, expect=201)
    await api.call("POST", "/policies", body=P1, expect=201)
    ola = {
        "id": "network-ola",
        "name": "Network L2",
        "kind": "ola",
        "group": "network",
        "target_seconds": 3600,
        "calendar_id": "office",
    }
    created = await api.call("POST", "/policies", body=ola, expect=201)
    assert created.json()["kind"] == "ola" and created.json()["target_seconds"] == 3600
    olas = (await api.call("GET", "/policies", "agent", kind="ola")).json()
    assert [p["id"] for p in olas["items"]] == ["network-ola"] and olas["total"] == 1
    page = (await api.call("GET", "/policies", "agent", limit=1, offset=1)).json()
    assert page["total"] == 2 and [p["id"] for p in page["items"]] == ["p1-incidents"]
    assert (await api.call("GET", "/policies", "agent", priority="P1")).json()["total"] == 1
    assert (await api.call("GET", "/policies", "agent", status="retired")).json()["total"] == 0


async def test_a_calendar_in_use_cannot_be_retired(api: Api) -> None:
    await api.call("POST", "/calendars", body=OFFICE, expect=201)
    await api.call("POST", "/policies", body=P1, expect=201)
    refused = await api.call("DELETE", "/calendars/office", expect=409)
    assert refused.json()["used_by"] == ["p1-incidents"]
    await api.call("DELETE", "/policies/p1-incidents", expect=200, headers={"If-Match": '"1"'})
    await api.call("DELETE", "/calendars/office", expect=412, headers={"If-Match": '"2"'})
    retired = await api.call("DELETE", "/calendars/office")
    assert retired.json()["status"] == "retired"
    refused = await api.call("POST", "/policies", body=P1 | {"id": "p1-new"}, expect=422)
    assert "calendar 'office' is retired" in refused.json()["detail"]
    listed = (await api.call("GET", "/calendars", "agent", status="retired")).json()
    assert [c["id"] for c in listed["items"]] == ["office"]


async def test_managers_and_admins_write_staff_read_requesters_are_refused(api: Api) -> None:
    await api.call("POST", "/calendars", None, body=OFFICE, expect=401)
    for persona in ("agent", "requester", "machine"):
        refused = await api.call("POST", "/calendars", persona, body=OFFICE, expect=403)
        assert "admin, manager" in refused.json()["detail"]
    await api.call("POST", "/calendars", "manager", body=OFFICE, expect=201)
    await api.call("DELETE", "/calendars/office", "agent", expect=403)
    await api.call("PUT", "/calendars/office", "agent", body=OFFICE, expect=403)
    for persona in ("requester", "machine"):
        await api.call("GET", "/calendars/office", persona, expect=403)
        await api.call("GET", "/policies", persona, expect=403)
    await api.call("GET", "/calendars/office", "agent")
