"""A cap on rotation overrides: each `POST …/rotations/{id}/overrides` adds one, and on-call
work grows with their number, so a rotation holds at most `max_rotation_overrides` (200 by
default) that have not ended -- one more is refused with 409 problem+json naming the cap -- and
of the ended ones, as many that ended last (older ones are dropped when one is added)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, time, timedelta

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from services.notify.domain.rotations import Override, Rotation, add_override, on_call
from services.notify.main import NotifySettings, create_app
from shared.errors import Conflict
from shared.runtime import in_memory
from tests.support.apps import asgi_client

Auth = Callable[..., dict[str, str]]
NOW = datetime(2026, 3, 16, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
OPS = Rotation("ops", "Ops", "UTC", ("ann", "ben"), 0, time(9), date(2026, 3, 2))


def override(user: str, start: datetime, hours: int = 1) -> Override:
    return Override(user, start, start + hours * H)


def test_overrides_still_to_end_are_capped_and_the_refusal_names_the_cap() -> None:
    rotation = OPS
    ongoing = override("cat", NOW - H, 2)  # in force now: it counts
    for added in (ongoing, override("dan", NOW + H), override("eve", NOW + 30 * H)):
        rotation = add_override(rotation, added, now=NOW, cap=3)
    with pytest.raises(Conflict) as refused:
        add_override(rotation, override("fay", NOW + 50 * H), now=NOW, cap=3)
    assert "cap of 3" in str(refused.value) and "max_rotation_overrides" in str(refused.value)
    assert refused.value.details == {"cap": 3, "ongoing": 3}
    assert len(rotation.overrides) == 3  # nothing was added
    # Once one has ended, there is room again.
    later = NOW + 2 * H
    rotation = add_override(rotation, override("fay", NOW + 50 * H), now=later, cap=3)
    assert [o.user for o in rotation.overrides] == ["cat", "dan", "eve", "fay"]


def test_ended_overrides_are_kept_up_to_the_cap_the_latest_ending_first() -> None:
    rotation = OPS
    past = [override(f"p{i}", NOW - (10 - i) * 24 * H) for i in range(4)]  # ended, oldest first
    for added in past:  # an override that already ended is no ongoing one: never refused
        rotation = add_override(rotation, added, now=NOW, cap=2)
    assert [o.user for o in rotation.overrides] == ["p2", "p3"]  # the two that ended last
    rotation = add_override(rotation, override("now", NOW - H, 3), now=NOW, cap=2)
    assert [o.user for o in rotation.overrides] == ["p2", "p3", "now"]
    assert on_call(rotation, NOW).user == "now"  # the ones that decide from now on are kept


@pytest.fixture
async def app(signing_key: str) -> FastAPI:
    settings = NotifySettings(
        auth_mode="dev", dev_signing_key=SecretStr(signing_key), log_json=False,
        ack_link_key=SecretStr("a" * 32), public_base_url="https://itsm.test",
        max_rotation_overrides=2,
    )  # fmt: skip
    return create_app(settings, runtime=in_memory(settings))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        yield client


async def test_the_api_refuses_an_override_over_the_cap_with_409_naming_it(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    boss = auth("boss", "manager")
    rotation = {
        "id": "ops", "name": "Ops", "zone": "Europe/Berlin", "participants": ["ann", "ben"],
        "handoff_weekday": 0, "handoff_time": "09:00", "starts": "2026-03-02",
    }  # fmt: skip
    assert (await client.post("/api/v1/notify/rotations", json=rotation, headers=boss)).is_success
    url = "/api/v1/notify/rotations/ops/overrides"
    soon = datetime.now(UTC) + 24 * H

    def body(user: str, days: int) -> dict[str, str]:
        start = soon + days * 24 * H
        return {"user": user, "start": start.isoformat(), "end": (start + H).isoformat()}

    for day, user in enumerate(("cat", "dan")):
        added = await client.post(url, json=body(user, day), headers=boss)
        assert added.status_code == 201, added.text
    refused = await client.post(url, json=body("eve", 5), headers=boss)
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert "cap of 2" in problem["detail"] and problem["cap"] == 2, problem
    stored = await client.get("/api/v1/notify/rotations/ops", headers=boss)
    assert [o["user"] for o in stored.json()["overrides"]] == ["cat", "dan"]
    # One that has already ended is history, not on-call work to come: accepted.
    past = {"user": "old", "start": "2026-03-09T00:00:00Z", "end": "2026-03-10T00:00:00Z"}
    assert (await client.post(url, json=past, headers=boss)).status_code == 201


def test_the_cap_is_a_bounded_setting_of_200_by_default() -> None:
    assert NotifySettings().max_rotation_overrides == 200
    with pytest.raises(ValueError, match="max_rotation_overrides"):
        NotifySettings(max_rotation_overrides=0)
