"""The notify API over ASGI on the in-memory runtime: authentication (401), roles (403),
object-level checks (404 for an escalation you were not paged for), invalid input (422
problem+json), policy versions, rotations and on-call, the directory, subscriptions, and the
signed single-use acknowledgement link."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from services.notify import handlers
from services.notify.main import NotifySettings, create_app
from shared.runtime import in_memory
from tests.support.apps import asgi_client
from tests.support.notify import breach, created, ladder, resolved

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


async def test_pending_escalations_list_what_waits_for_whom_in_one_call(
    app: FastAPI, client: httpx.AsyncClient, auth: Auth
) -> None:
    notify = app.state.notify
    response = await client.post(
        "/api/v1/notify/policies", json=ladder(), headers=auth("boss", "manager")
    )
    assert response.status_code == 201, response.text
    now = datetime.now(UTC)
    await handlers.on_incident_event(notify, created("INC1", now), now=now)
    for i, ticket in enumerate(("INC1", "INC2", "INC3")):  # each pages alice, the lead later
        at = now + timedelta(seconds=i)
        await handlers.on_sla_event(notify, breach(ticket, at), now=at)
    url = "/api/v1/notify/escalations/pending"
    alice, bob, boss = auth("alice", "agent"), auth("alice2", "agent"), auth("boss", "manager")

    async def pending(headers: dict[str, str], **params: Any) -> dict[str, Any]:
        answer = await client.get(url, params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        page: dict[str, Any] = answer.json()
        return page

    mine = await pending(alice)
    assert [e["ticket_id"] for e in mine["items"]] == ["INC1", "INC2", "INC3"]
    assert mine["total"] == 3 and {e["status"] for e in mine["items"]} == {"notified"}
    first = mine["items"][0]
    assert first["ticket"] == {
        "number": "INC0000042", "title": "Mail is down", "priority": "P2", "status": "new"
    }  # fmt: skip
    assert mine["items"][1]["ticket"] is None  # notify never saw INC2's incident events
    one = await pending(alice, limit=1, offset=1)
    assert [e["ticket_id"] for e in one["items"]] == ["INC2"] and one["total"] == 3
    assert (await pending(bob))["items"] == []  # never paged
    assert (await pending(bob, paged="me"))["total"] == 0
    assert (await pending(boss))["total"] == 3  # managers: everyone's
    assert (await pending(boss, paged="me"))["total"] == 0
    assert (await pending(boss, paged="alice"))["total"] == 3
    refused = await client.get(url, params={"paged": "alice"}, headers=bob)
    assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
    for bad in ({"limit": 101}, {"offset": -1}, {"paged": "x" * 201}):
        invalid = await client.get(url, params=bad, headers=alice)
        assert invalid.status_code == 422 and invalid.headers["content-type"] == PROBLEM
    requester = await client.get(url, headers=auth("rita", "requester"))
    assert requester.status_code == 403
    assert (await client.get(url)).status_code == 401

    acked = await client.post(
        f"/api/v1/notify/escalations/{mine['items'][1]['id']}/acknowledgement", headers=alice
    )
    assert acked.status_code == 200
    await handlers.on_incident_event(notify, resolved("INC3", now, sequence=2), now=now)
    later = now + timedelta(seconds=901)  # level 2 (lead) fires; the ladder is exhausted
    await handlers.fire_due(notify, "INC1", now=later)
    assert [e["ticket_id"] for e in (await pending(alice))["items"]] == ["INC1"]
    (exhausted,) = (await pending(auth("lead", "agent")))["items"]
    assert exhausted["status"] == "exhausted" and exhausted["notified"] == ["alice", "lead"]


async def test_escalations_stored_before_the_pending_list_existed_are_found(
    app: FastAPI, client: httpx.AsyncClient, auth: Auth
) -> None:
    await breached_escalation(app, client, auth)
    escalations = app.state.notify.escalations
    await escalations.collection.update_one(
        {"_id": "INC1"}, {"$unset": {"awaiting_ack": "", "awaiting_since": ""}}
    )
    alice = auth("alice", "agent")
    url = "/api/v1/notify/escalations/pending"
    assert (await client.get(url, headers=alice)).json()["total"] == 0
    assert await escalations.backfill_awaiting() == 1
    assert (await client.get(url, headers=alice)).json()["total"] == 1
    assert await escalations.backfill_awaiting() == 0
