"""The incidents walking skeleton through its HTTP API, on the in-memory adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from services.incidents.main import create_app
from shared.bus.memory import InMemoryBus
from shared.contracts import Topic
from shared.contracts.codec import decode
from shared.runtime import Runtime, in_memory
from shared.settings import ServiceSettings
from tests.support.apps import asgi_client
from tests.support.polling import eventually

Auth = Callable[..., dict[str, str]]
NEW = {"title": "VPN drops every 10 minutes", "impact": 2, "urgency": 1}


@pytest.fixture
def runtime(settings: ServiceSettings) -> Runtime:
    return in_memory(settings, InMemoryBus())


@pytest.fixture
async def client(settings: ServiceSettings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings, runtime)) as c:
        yield c


async def test_create_returns_the_incident_with_priority_location_and_etag(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    response = await client.post("/api/v1/incidents", json=NEW, headers=auth("alice", "requester"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["priority"] == "P2" and body["status"] == "new" and body["requester"] == "alice"
    assert body["number"] == "INC0000001" and body["version"] == 1
    assert response.headers["location"] == f"/api/v1/incidents/{body['id']}"
    assert response.headers["etag"] == '"1"'


async def test_created_incident_is_published_as_a_cloudevent_through_the_outbox(
    client: httpx.AsyncClient, auth: Auth, runtime: Runtime
) -> None:
    response = await client.post("/api/v1/incidents", json=NEW, headers=auth("alice", "requester"))
    incident_id = response.json()["id"]
    bus = runtime.bus
    assert isinstance(bus, InMemoryBus)

    async def published() -> list:
        return [decode(r) for r in bus.records(Topic.INCIDENTS)]

    events = await eventually(published, what="the created event")
    assert events[0].type == "itsm.incident.created.v1"
    assert events[0].subject == incident_id and events[0].sequence == 1
    assert events[0].data["priority"] == "P2"
    stored = await runtime.database["incidents"].find_one({"_id": incident_id})
    assert stored["outbox"] == [] or len(stored["outbox"]) == 1


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer not-a-jwt"}, 401),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, 401),
    ],
    ids=["missing", "garbage", "wrong-scheme"],
)
async def test_unauthenticated_calls_get_401_problem_json(
    client: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    response = await client.post("/api/v1/incidents", json=NEW, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status and response.json()["detail"]


async def test_a_role_without_the_right_gets_403(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.get("/api/v1/incidents", headers=auth("ci-bot", "service"))
    assert response.status_code == 403
    assert "roles" in response.json()["detail"]


async def test_invalid_input_gets_422_naming_the_field(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    response = await client.post(
        "/api/v1/incidents",
        json={"title": "", "impact": 9, "status": "closed"},
        headers=auth("alice", "requester"),
    )
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    locations = {e["location"] for e in problem["errors"]}
    assert {"body.title", "body.impact", "body.status"} <= locations


async def test_a_requester_sees_only_their_own_incidents(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    mine = (
        await client.post("/api/v1/incidents", json=NEW, headers=auth("alice", "requester"))
    ).json()
    theirs = (
        await client.post("/api/v1/incidents", json=NEW, headers=auth("bob", "requester"))
    ).json()
    alice = auth("alice", "requester")
    assert (await client.get(f"/api/v1/incidents/{mine['id']}", headers=alice)).status_code == 200
    denied = await client.get(f"/api/v1/incidents/{theirs['id']}", headers=alice)
    assert denied.status_code == 404  # not 403: existence is not confirmed
    listed = (await client.get("/api/v1/incidents", headers=alice)).json()
    assert [i["id"] for i in listed["items"]] == [mine["id"]] and listed["total"] == 1
    agent_view = (await client.get("/api/v1/incidents", headers=auth("ann", "agent"))).json()
    assert agent_view["total"] == 2


async def test_only_staff_record_incidents_for_someone_else(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    on_behalf = {**NEW, "requester": "carol"}
    refused = await client.post(
        "/api/v1/incidents", json=on_behalf, headers=auth("alice", "requester")
    )
    assert refused.status_code == 403
    recorded = await client.post("/api/v1/incidents", json=on_behalf, headers=auth("ann", "agent"))
    assert recorded.status_code == 201 and recorded.json()["requester"] == "carol"


async def test_edits_need_a_current_if_match(client: httpx.AsyncClient, auth: Auth) -> None:
    agent = auth("ann", "agent")
    created = (await client.post("/api/v1/incidents", json=NEW, headers=agent)).json()
    url = f"/api/v1/incidents/{created['id']}"

    missing = await client.patch(url, json={"urgency": 3}, headers=agent)
    assert missing.status_code == 428

    edited = await client.patch(url, json={"urgency": 3}, headers={**agent, "If-Match": '"1"'})
    assert edited.status_code == 200, edited.text
    assert edited.json()["priority"] == "P4" and edited.headers["etag"] == '"2"'

    stale = await client.patch(url, json={"urgency": 1}, headers={**agent, "If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.json()["current_version"] == 2
    assert (await client.get(url, headers=agent)).json()["urgency"] == 3


async def test_a_requester_cannot_reclassify_their_incident(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    alice = auth("alice", "requester")
    created = (await client.post("/api/v1/incidents", json=NEW, headers=alice)).json()
    url = f"/api/v1/incidents/{created['id']}"
    refused = await client.patch(url, json={"impact": 1}, headers={**alice, "If-Match": '"1"'})
    assert refused.status_code == 403 and "impact" in refused.json()["detail"]
    allowed = await client.patch(
        url, json={"description": "also on wifi"}, headers={**alice, "If-Match": '"1"'}
    )
    assert allowed.status_code == 200 and allowed.json()["description"] == "also on wifi"


async def test_lists_are_paginated_with_a_capped_page_size(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    agent = auth("ann", "agent")
    for _ in range(3):
        await client.post("/api/v1/incidents", json=NEW, headers=agent)
    page = (await client.get("/api/v1/incidents?limit=2&offset=1", headers=agent)).json()
    assert len(page["items"]) == 2 and page["total"] == 3 and page["offset"] == 1
    too_big = await client.get("/api/v1/incidents?limit=1000", headers=agent)
    assert too_big.status_code == 422


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/livez")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"bus": "ok"}
    metrics = await client.get("/metrics")
    assert "itsm_http_requests_total" in metrics.text


async def test_oversized_bodies_are_refused_with_413(client: httpx.AsyncClient, auth: Auth) -> None:
    huge = {**NEW, "description": "x" * 2_000_000}
    response = await client.post("/api/v1/incidents", json=huge, headers=auth("alice", "requester"))
    assert response.status_code == 413
