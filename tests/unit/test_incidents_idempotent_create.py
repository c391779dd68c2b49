"""Idempotent creates on the in-memory adapters: a create repeated with the same
`Idempotency-Key` answers the same incident and records it once; the same key with another
request is refused; keys are the caller's own; a malformed key is a 422 naming the header."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.incidents.main import IncidentsSettings, create_app
from shared.bus.memory import InMemoryBus
from shared.runtime import in_memory
from shared.settings import ServiceSettings
from tests.support.apps import asgi_client
from tests.support.incidents import BASE, Auth, World

VPN = {"title": "VPN drops", "impact": 2, "urgency": 1}


@pytest.fixture
async def world(settings: ServiceSettings, auth: Auth) -> AsyncIterator[World]:
    runtime = in_memory(settings, InMemoryBus())
    async with asgi_client(create_app(IncidentsSettings(**settings.model_dump()), runtime)) as c:
        yield World(c, auth)


async def create(
    world: World, key: str | bytes | None, body: dict[str, Any] = VPN, who: str = "owner"
) -> httpx.Response:
    headers: dict[str, str | bytes] = {**world.headers(who)}
    if key is not None:
        headers["Idempotency-Key"] = key
    return await world.client.post(BASE, json=body, headers=headers)


async def incidents_listed(world: World) -> list[dict[str, Any]]:
    response = await world.client.get(BASE, headers=world.headers("manager"))
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_a_repeated_create_answers_the_same_incident_and_records_it_once(
    world: World,
) -> None:
    first = await create(world, "retry-me-1")
    again = await create(world, "retry-me-1")

    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["number"] == first.json()["number"]
    assert again.headers["Location"] == first.headers["Location"]
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [i["id"] for i in await incidents_listed(world)] == [first.json()["id"]]


async def test_copies_of_one_create_racing_each_other_record_one_incident(world: World) -> None:
    answers = await asyncio.gather(*(create(world, "storm-7") for _ in range(5)))

    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum("Idempotent-Replayed" in a.headers for a in answers) == 4
    assert len(await incidents_listed(world)) == 1


async def test_the_same_key_with_another_request_is_refused(world: World) -> None:
    assert (await create(world, "k-1")).status_code == 201
    other = await create(world, "k-1", {**VPN, "title": "Printer jam"})

    assert other.status_code == 422, other.text
    assert other.headers["content-type"].startswith("application/problem+json")
    assert "Idempotency-Key" in other.json()["detail"]
    assert len(await incidents_listed(world)) == 1


async def test_keys_are_the_callers_own(world: World) -> None:
    """Another caller's key names another incident: neither sees nor replays the other's."""
    mine = await create(world, "shared-key", who="owner")
    theirs = await create(world, "shared-key", who="stranger")

    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert "Idempotent-Replayed" not in theirs.headers


async def test_without_a_key_every_create_is_a_new_incident(world: World) -> None:
    first, second = await create(world, None), await create(world, None)
    assert first.json()["id"] != second.json()["id"]


@pytest.mark.parametrize("key", ["", "with space", "x" * 256, "é".encode("latin-1")])
async def test_a_malformed_key_is_a_422_naming_the_header(world: World, key: str | bytes) -> None:
    response = await create(world, key)
    assert response.status_code == 422, response.text
    assert "Idempotency-Key" in response.text
    assert await incidents_listed(world) == []


async def test_a_repeat_is_refused_once_the_incident_is_no_longer_the_callers_to_see(
    world: World,
) -> None:
    await world.setup_groups()
    body = {**VPN, "requester": "alice"}  # recorded by an agent of the service desk for alice
    first = await create(world, "desk-call-1", body, who="member")
    assert first.status_code == 201, first.text
    await world.do(first.json()["id"], "assignment", "manager", {"group": "network"})
    seen = await world.client.get(first.headers["Location"], headers=world.headers("member"))
    assert seen.status_code in (403, 404)  # the service desk no longer sees it

    again = await create(world, "desk-call-1", body, who="member")

    assert again.status_code == 403, again.text
