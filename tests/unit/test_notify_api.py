"""The notify API over ASGI on the in-memory runtime: authentication (401), roles (403),
object-level checks (404 for an escalation you were not paged for), invalid input (422
problem+json), policy versions, rotations and on-call, the directory, subscriptions, and the
signed single-use acknowledgement link."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from services.notify import handlers
from services.notify.main import NotifySettings, create_app
from shared.runtime import in_memory
from tests.support.apps import asgi_client
from tests.support.notify import breach, ladder

Auth = Callable[..., dict[str, str]]
PROBLEM = "application/problem+json"


@pytest.fixture
async def app(signing_key: str) -> FastAPI:
    settings = NotifySettings(
        auth_mode="dev", dev_signing_key=SecretStr(signing_key), log_json=False,
        ack_link_key=SecretStr("a" * 32), public_base_url="https://itsm.test",
    )  # fmt: skip
    return create_app(settings, runtime=in_memory(settings))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        yield client


async def breached_escalation(app: FastAPI, client: httpx.AsyncClient, auth: Auth) -> str:
    """A breach of INC1 paging alice: the escalation's id."""
    response = await client.post(
        "/api/v1/notify/policies", json=ladder(), headers=auth("boss", "manager")
    )
    assert response.status_code == 201, response.text
    now = datetime.now(UTC)
    await handlers.on_sla_event(app.state.notify, breach("INC1", now), now=now)
    stored = await app.state.notify.escalations.get("INC1")
    escalation_id: str = stored.book.escalations[0].id
    return escalation_id


async def test_every_endpoint_but_the_ack_link_needs_a_token_and_a_role(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    response = await client.get("/api/v1/notify/policies")
    assert response.status_code == 401 and response.headers["content-type"] == PROBLEM
    response = await client.post(
        "/api/v1/notify/policies", json=ladder(), headers=auth("alice", "agent")
    )
    assert response.status_code == 403
    response = await client.get("/api/v1/notify/policies", headers=auth("rita", "requester"))
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"match": {"event_types": ["itsm.sla.started.v1"]}}, "can start an escalation"),
        ({"levels": []}, "levels"),
        ({"id": "has space"}, "id"),
        ({"levels": [{"delay_seconds": 60, "targets": [{"kind": "user", "name": "a"}]},
                     {"delay_seconds": 0, "targets": [{"kind": "user", "name": "b"}]}]},
         "delays must increase"),
        ({"levels": [{"delay_seconds": 0, "targets": [{"kind": "team", "name": "a"}]}]}, "kind"),
    ],
)  # fmt: skip
async def test_an_invalid_policy_is_refused_saying_what_is_wrong(
    client: httpx.AsyncClient, auth: Auth, change: dict[str, Any], says: str
) -> None:
    response = await client.post(
        "/api/v1/notify/policies", json={**ladder(), **change}, headers=auth("boss", "admin")
    )
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert says in response.json()["detail"]


async def test_policies_are_versioned_and_an_ambiguous_one_is_refused(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    boss = auth("boss", "manager")
    assert (await client.post("/api/v1/notify/policies", json=ladder(), headers=boss)).is_success
    clash = await client.post("/api/v1/notify/policies", json=ladder("other"), headers=boss)
    assert clash.status_code == 409 and "same specificity" in clash.json()["detail"]
    body = {k: v for k, v in ladder(second="director").items() if k != "id"}
    stale = await client.put(
        "/api/v1/notify/policies/breach-ladder", json=body, headers={**boss, "If-Match": '"7"'}
    )
    assert stale.status_code == 412
    updated = await client.put(
        "/api/v1/notify/policies/breach-ladder", json=body, headers={**boss, "If-Match": '"1"'}
    )
    assert updated.status_code == 200 and updated.json()["version"] == 2
    first = await client.get("/api/v1/notify/policies/breach-ladder/versions/1", headers=boss)
    assert first.json()["levels"][1]["targets"] == [{"kind": "user", "name": "lead"}]
    retired = await client.delete("/api/v1/notify/policies/breach-ladder", headers=boss)
    assert (retired.json()["version"], retired.json()["enabled"]) == (3, False)
    listed = await client.get("/api/v1/notify/policies", headers=auth("alice", "agent"))
    assert listed.json()["items"] == []


async def test_rotations_answer_who_is_on_call_at_a_time(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    boss = auth("boss", "admin")
    rotation = {
        "id": "ops", "name": "Ops", "zone": "Europe/Berlin", "participants": ["ann", "ben"],
        "handoff_weekday": 0, "handoff_time": "09:00", "starts": "2026-03-02",
    }  # fmt: skip
    assert (await client.post("/api/v1/notify/rotations", json=rotation, headers=boss)).is_success
    agent = auth("alice", "agent")
    url = "/api/v1/notify/rotations/ops/on-call"
    at = await client.get(url, params={"at": "2026-03-09T08:59:00+01:00"}, headers=agent)
    assert (at.json()["user"], at.json()["until"]) == ("ann", "2026-03-09T08:00:00Z")
    override = {"user": "cat", "start": "2026-03-09T00:00:00Z", "end": "2026-03-10T00:00:00Z"}
    response = await client.post(
        "/api/v1/notify/rotations/ops/overrides", json=override, headers=boss
    )
    assert response.status_code == 201 and response.json()["version"] == 2
    at = await client.get(url, params={"at": "2026-03-09T12:00:00Z"}, headers=agent)
    assert at.json()["user"] == "cat" and at.json()["override"]["user"] == "cat"
    bad = await client.post(
        "/api/v1/notify/rotations", json={**rotation, "id": "x", "zone": "Mars/Olympus"},
        headers=boss,
    )  # fmt: skip
    assert bad.status_code == 422 and "Mars/Olympus" in bad.json()["detail"]
    naive = await client.get(url, params={"at": "2026-03-09T12:00:00"}, headers=agent)
    assert naive.status_code == 422


async def test_the_directory_keeps_secrets_write_only_and_people_to_their_own_entry(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    entry = {
        "email": "alice@example.com",
        "webhook": {"url": "https://hooks.example.com/x/s3cret", "secret": "s" * 20},
        "quiet_hours": {"zone": "Europe/Berlin", "start": "22:00", "end": "07:00"},
    }
    mine = await client.put(
        "/api/v1/notify/people/alice", json=entry, headers=auth("alice", "agent")
    )
    assert mine.status_code == 200, mine.text
    assert mine.json()["channels"] == ["email", "webhook"] and "s3cret" not in mine.text
    theirs = await client.get("/api/v1/notify/people/alice", headers=auth("bob", "agent"))
    assert theirs.status_code == 404
    other = await client.put(
        "/api/v1/notify/people/bob", json=entry, headers=auth("alice", "agent")
    )
    assert other.status_code == 404
    boss = await client.get("/api/v1/notify/people/alice", headers=auth("boss", "manager"))
    assert boss.json()["quiet_hours"]["start"] == "22:00:00"
    invalid = await client.put(
        "/api/v1/notify/people/alice",
        json={"email": "not-an-address"},
        headers=auth("alice", "agent"),
    )
    assert invalid.status_code == 422


async def test_escalations_are_seen_and_acknowledged_by_those_paged_or_managers(
    app: FastAPI, client: httpx.AsyncClient, auth: Auth
) -> None:
    escalation_id = await breached_escalation(app, client, auth)
    url = f"/api/v1/notify/escalations/{escalation_id}"
    bob = auth("bob", "agent")
    assert (await client.get(url, headers=bob)).status_code == 404
    listed = await client.get(
        "/api/v1/notify/escalations", params={"ticket_id": "INC1"}, headers=bob
    )
    assert listed.json() == []
    assert (await client.post(f"{url}/acknowledgement", headers=bob)).status_code == 404
    manager = await client.get(url, headers=auth("boss", "manager"))
    assert manager.json()["notified"] == ["alice"] and manager.json()["level"] == 1
    alice = auth("alice", "agent")
    acked = await client.post(f"{url}/acknowledgement", headers=alice)
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == "alice" and acked.json()["next_level_at"] is None
    again = await client.post(f"{url}/acknowledgement", headers=alice)
    assert again.status_code == 409 and again.json()["current_status"] == "acknowledged"
    deliveries = await client.get(
        "/api/v1/notify/deliveries", params={"ticket_id": "INC1"}, headers=bob
    )
    assert deliveries.json()["items"] == []
    mine = await client.get(
        "/api/v1/notify/deliveries", params={"ticket_id": "INC1"}, headers=alice
    )
    assert [d["recipient"] for d in mine.json()["items"]] == ["alice"]


async def test_the_ack_link_is_signed_and_single_use(
    app: FastAPI, client: httpx.AsyncClient, auth: Auth
) -> None:
    escalation_id = await breached_escalation(app, client, auth)
    link = app.state.notify_links.ack(escalation_id, "alice", datetime.now(UTC))
    path = link.removeprefix("https://itsm.test")
    body, signature = path.rsplit(".", 1)
    forged = f"{body}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    refused = await client.post(forged)
    assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
    assert refused.json()["reason"] == "bad_signature" and "signature" in refused.json()["detail"]
    garbage = await client.post("/api/v1/notify/ack/not-a-token")
    assert garbage.status_code == 400
    page = await client.get(path)
    assert page.status_code == 200 and "<form method='post'" in page.text
    stored = await app.state.notify.escalations.get("INC1")
    assert stored.book.escalations[0].status == "notified"  # a GET acknowledges nothing
    acked = await client.post(path)
    assert acked.status_code == 200, acked.text
    assert (acked.json()["status"], acked.json()["acknowledged_by"]) == ("acknowledged", "alice")
    reused = await client.post(path)
    assert reused.status_code == 409 and reused.json()["reason"] == "used"


async def test_a_user_manages_their_own_subscriptions(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    alice = auth("alice", "agent")
    url = "/api/v1/notify/subscriptions/mine"
    put = await client.put(f"{url}/p1_opened", json={"channels": ["email", "slack"]}, headers=alice)
    assert put.status_code == 200 and put.json()["user"] == "alice"
    assert [s["kind"] for s in (await client.get(url, headers=alice)).json()] == ["p1_opened"]
    assert (await client.get(url, headers=auth("bob", "agent"))).json() == []
    assert (await client.put(f"{url}/everything", json={}, headers=alice)).status_code == 422
    assert (await client.delete(f"{url}/p1_opened", headers=alice)).status_code == 204
    assert (await client.delete(f"{url}/p1_opened", headers=alice)).status_code == 404
