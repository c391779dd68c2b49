"""The changes API on the in-memory adapters: the normal, emergency and standard flows, bad
input, scheduling conflicts and freezes, the calendar, access control."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.changes.main import ChangesSettings, create_app
from shared.bus.memory import InMemoryBus
from shared.contracts import Envelope, Topic
from shared.contracts.codec import decode
from shared.contracts.incidents import IncidentCreated
from shared.runtime import Runtime, in_memory
from shared.settings import ServiceSettings
from tests.support.apps import asgi_client
from tests.support.polling import eventually

Auth = Callable[..., dict[str, str]]
BASE = "/api/v1/changes"
START = datetime(2026, 3, 21, 21, 30, tzinfo=UTC)  # Saturday 22:30 CET: in the weekend window
PEOPLE = {
    "requester": ("rita", "requester"),
    "other": ("otto", "requester"),
    "implementer": ("ivan", "agent"),
    "manager": ("mona", "change-manager"),
    "cab": ("carla", "agent"),
    "cab2": ("cem", "agent"),
    "ecab": ("ed", "agent"),
    "machine": ("ci", "service"),
}


class Api:
    def __init__(
        self, client: httpx.AsyncClient, auth: Auth, bus: InMemoryBus | None = None
    ) -> None:
        self.client = client
        self.auth = auth
        self.bus = bus  # the in-memory bus the service consumes (unit tests only)

    def h(self, persona: str) -> dict[str, str]:
        return self.auth(*PEOPLE[persona])

    async def call(
        self, method: str, url: str, persona: str, body: Any = None, expect: int = 200
    ) -> dict[str, Any]:
        response = await self.client.request(method, url, json=body, headers=self.h(persona))
        assert response.status_code == expect, response.text
        return response.json()

    async def create(self, persona: str = "requester", expect: int = 201, **fields: Any) -> dict:
        body = {
            "title": "Upgrade core router firmware",
            "change_type": "normal",
            "implementer": "ivan",
            "services": ["network"],
            "configuration_items": ["rtr-1"],
            "plan": {"implementation": "flash", "backout": "reflash", "test": "ping",
                     "backout_tested": True},
            "planned_start": START.isoformat(),
            "planned_end": (START + timedelta(hours=1)).isoformat(),
            **fields,
        }  # fmt: skip
        return await self.call("POST", BASE, persona, body, expect)

    async def act(
        self, change: dict, action: str, persona: str, body: Any = None, expect: int = 200
    ) -> dict:
        return await self.call(
            "POST", f"{BASE}/{change['id']}/{action}", persona, body or {}, expect
        )


@pytest.fixture
async def api(settings: ServiceSettings, auth: Auth) -> AsyncIterator[Api]:
    bus = InMemoryBus()
    runtime: Runtime = in_memory(settings, bus)
    config = ChangesSettings(**settings.model_dump())
    async with asgi_client(create_app(config, runtime)) as client:
        a = Api(client, auth, bus)
        for item in ("rtr-1", "rtr-2", "sw-1"):
            await a.call(
                "POST",
                "/api/v1/configuration-items",
                "manager",
                {"name": item, "service": "network"},
                201,
            )
        await a.call("PUT", "/api/v1/approval-groups/cab", "manager", {"members": ["carla", "cem"]})
        await a.call("PUT", "/api/v1/approval-groups/ecab", "manager", {"members": ["ed"]})
        await a.call(
            "POST", "/api/v1/maintenance-windows", "manager",
            {"name": "weekend", "weekday": 5, "start": "22:00", "duration_minutes": 360,
             "zone": "Europe/Berlin"}, 201,
        )  # fmt: skip
        yield a


async def test_a_normal_change_from_request_to_closure(api: Api) -> None:
    change = await api.create()
    assert change["status"] == "draft" and change["number"] == "CHG0000001"
    change = await api.act(change, "submit", "requester")
    assert change["status"] == "assessment"
    change = await api.act(change, "assessment", "manager")
    assert change["status"] == "awaiting_approval" and change["risk"]["level"] == "low"
    assert change["required_approvals"] == [{"group": "change-managers", "quorum": 1}]
    change = await api.act(change, "approvals", "manager", {"decision": "approve", "comment": "go"})
    assert change["status"] == "scheduled"
    await api.act(change, "start", "other", expect=404)
    await api.act(change, "start", "cab", expect=403)
    change = await api.act(change, "start", "implementer")
    change = await api.act(change, "complete", "implementer", {"outcome": "failed"})
    assert change["review_required"] is True
    refused = await api.act(change, "close", "manager", expect=409)
    assert "review is required" in refused["detail"]
    change = await api.act(
        change, "review", "implementer", {"summary": "firmware bug", "lessons": "stage"}
    )
    change = await api.act(change, "close", "manager")
    assert change["status"] == "closed" and change["outcome"] == "failed"
    timeline = await api.call("GET", f"{BASE}/{change['id']}/timeline", "requester")
    assert [e["events"][0] for e in timeline] == [
        "created", "submitted", "assessed", "approval_recorded", "started", "completed",
        "reviewed", "closed",
    ]  # fmt: skip
    assert (
        timeline[2]["actor"] == "mona"
        and timeline[2]["changes"]["status"]["after"] == "awaiting_approval"
    )


async def test_medium_risk_needs_the_cab_and_a_rejection_returns_to_draft(api: Api) -> None:
    change = await api.create(risk_answers={"user_impact": "high"})
    await api.act(change, "submit", "requester")
    change = await api.act(change, "assessment", "manager")
    assert (
        change["risk"]["level"] == "medium" and "high impact on users" in change["risk"]["reasons"]
    )
    assert [r["group"] for r in change["required_approvals"]] == ["change-managers", "cab"]
    await api.act(change, "approvals", "requester", {"decision": "approve"}, expect=403)
    change = await api.act(
        change, "approvals", "cab", {"decision": "reject", "comment": "no rollback test"}
    )
    assert change["status"] == "draft"


async def test_bad_input_gets_a_clear_422(api: Api) -> None:
    ends_first = await api.create(planned_end=(START - timedelta(hours=1)).isoformat(), expect=422)
    assert "ends before it starts" in ends_first["detail"]
    unknown = await api.create(configuration_items=["rtr-1", "mystery-box"], expect=422)
    assert "mystery-box" in unknown["detail"]
    no_plan = await api.create(plan={"implementation": "flash"})
    refused = await api.act(no_plan, "submit", "requester", expect=422)
    assert "backout plan" in refused["detail"] and "test plan" in refused["detail"]
    naive = await api.create(planned_start="2026-03-21T21:30:00", expect=422)
    assert naive["errors"][0]["location"].startswith("body.planned_start")


async def approved(api: Api, **fields: Any) -> dict:
    change = await api.create(**fields)
    await api.act(change, "submit", "requester")
    await api.act(change, "assessment", "manager")
    return await api.act(change, "approvals", "manager", {"decision": "approve"})


async def test_an_overlapping_approved_change_on_the_same_item_is_a_conflict(api: Api) -> None:
    first = await approved(api)
    second = await api.create(
        planned_start=(START + timedelta(minutes=30)).isoformat(),
        planned_end=(START + timedelta(hours=2)).isoformat(),
    )
    await api.act(second, "submit", "requester")
    await api.act(second, "assessment", "manager")
    refused = await api.act(second, "approvals", "manager", {"decision": "approve"}, expect=409)
    assert refused["conflicting_changes"] == [first["number"]]
    other_item = await approved(api, configuration_items=["sw-1"])
    assert other_item["status"] == "scheduled"


async def test_freezes_block_normal_changes_but_not_emergencies(api: Api) -> None:
    await api.call(
        "POST", "/api/v1/freeze-windows", "manager",
        {"name": "quarter-end", "start": (START - timedelta(days=1)).isoformat(),
         "end": (START + timedelta(days=1)).isoformat()}, 201,
    )  # fmt: skip
    normal = await api.create()
    await api.act(normal, "submit", "requester")
    await api.act(normal, "assessment", "manager")
    refused = await api.act(normal, "approvals", "manager", {"decision": "approve"}, expect=409)
    assert refused["freezes"] == ["quarter-end"]
    emergency = await api.create(change_type="emergency", title="Patch exploited CVE")
    await api.act(emergency, "submit", "requester")
    emergency = await api.act(emergency, "assessment", "manager")
    assert [r["group"] for r in emergency["required_approvals"]] == ["ecab"]
    emergency = await api.act(emergency, "approvals", "ecab", {"decision": "approve"})
    assert emergency["status"] == "scheduled" and emergency["review_required"] is True


async def test_standard_changes_come_from_the_catalog_and_are_pre_approved(api: Api) -> None:
    await api.call(
        "POST", "/api/v1/change-templates", "manager",
        {"name": "patch-linux", "title": "Monthly Linux patching", "implementation": "apt upgrade",
         "backout": "snapshot restore", "test": "smoke tests", "services": ["network"]}, 201,
    )  # fmt: skip
    missing = await api.create(change_type="standard", template=None, expect=422)
    assert "template" in missing["detail"]
    unknown = await api.create(change_type="standard", template="nope", expect=422)
    assert "nope" in unknown["detail"]
    change = await api.create(change_type="standard", template="patch-linux", title="", plan={})
    assert (
        change["title"] == "Monthly Linux patching"
        and change["plan"]["backout"] == "snapshot restore"
    )
    change = await api.act(change, "submit", "requester")
    assert change["status"] == "scheduled" and change["approvals"] == []


async def test_the_calendar_shows_changes_freezes_and_local_maintenance_windows(api: Api) -> None:
    change = await approved(api)
    calendar = await api.call(
        "GET", f"{BASE}/calendar?start=2026-03-20T00:00:00Z&end=2026-04-06T00:00:00Z&zone=Europe/Berlin",
        "requester",
    )  # fmt: skip
    assert [c["number"] for c in calendar["changes"]] == [change["number"]]
    local = [m["local_start"] for m in calendar["maintenance"]]
    assert local == [
        "2026-03-21T22:00:00+01:00",
        "2026-03-28T22:00:00+01:00",
        "2026-04-04T22:00:00+02:00",
    ]
    assert [m["start"] for m in calendar["maintenance"]][2] == "2026-04-04T20:00:00Z"
    await api.call(
        "GET",
        f"{BASE}/calendar?start=2026-03-20T00:00:00Z&end=2026-09-20T00:00:00Z",
        "requester",
        expect=422,
    )
    await api.call(
        "GET",
        f"{BASE}/calendar?start=2026-03-20T00:00:00Z&end=2026-03-21T00:00:00Z&zone=Mars/Base",
        "requester",
        expect=422,
    )


async def test_risk_is_lower_inside_the_maintenance_window(api: Api) -> None:
    inside = await api.create()
    outside = await api.create(
        planned_start="2026-03-23T10:00:00Z", planned_end="2026-03-23T11:00:00Z"
    )
    inside_risk = await api.call("GET", f"{BASE}/{inside['id']}/risk", "requester")
    outside_risk = await api.call("GET", f"{BASE}/{outside['id']}/risk", "requester")
    assert (
        inside_risk["reasons"] == []
        and "planned outside a maintenance window" in outside_risk["reasons"]
    )


async def test_delegated_approval(api: Api) -> None:
    change = await api.create(risk_answers={"user_impact": "high"})
    await api.act(change, "submit", "requester")
    await api.act(change, "assessment", "manager")
    await api.act(change, "delegations", "cab", {"to": "dora"})
    dora = {"Authorization": api.auth("dora", "agent")["Authorization"]}
    response = await api.client.post(
        f"{BASE}/{change['id']}/approvals", json={"decision": "approve"}, headers=dora
    )
    assert response.status_code == 200, response.text
    assert response.json()["approvals"][0]["on_behalf_of"] == "carla"


async def test_access(api: Api) -> None:
    change = await api.create()
    url = f"{BASE}/{change['id']}"
    for persona, status in [
        ("requester", 200), ("other", 404), ("implementer", 200), ("manager", 200),
        ("cab", 200), ("machine", 403),
    ]:  # fmt: skip
        response = await api.client.get(url, headers=api.h(persona))
        assert response.status_code == status, (persona, response.text)
    assert (await api.client.get(BASE, headers=api.h("other"))).json()["total"] == 0
    await api.act(change, "assessment", "manager", expect=409)  # a draft is not assessable yet
    await api.act(change, "submit", "requester")
    await api.act(change, "assessment", "requester", expect=403)
    await api.act(change, "decline", "implementer", {"reason": "no"}, expect=403)
    edited = await api.client.patch(url, json={"title": "x"}, headers=api.h("requester"))
    assert edited.status_code == 428
    for persona in ("requester", "implementer", "cab", "machine"):
        denied = await api.client.post("/api/v1/freeze-windows", json={}, headers=api.h(persona))
        assert denied.status_code in (403, 422) and (
            persona == "machine" or denied.status_code == 403
        )


async def test_edits_are_for_drafts_with_a_current_etag(api: Api) -> None:
    change = await api.create()
    url = f"{BASE}/{change['id']}"
    ok = await api.client.patch(url, json={"title": "Upgrade both routers", "configuration_items": ["rtr-1", "rtr-2"]},
                                headers={**api.h("requester"), "If-Match": '"1"'})  # fmt: skip
    assert ok.status_code == 200 and ok.json()["configuration_items"] == ["rtr-1", "rtr-2"]
    stale = await api.client.patch(
        url, json={"title": "x"}, headers={**api.h("requester"), "If-Match": '"1"'}
    )
    assert stale.status_code == 412
    await api.act(change, "submit", "requester")
    frozen = await api.client.patch(
        url, json={"title": "x"}, headers={**api.h("requester"), "If-Match": '"3"'}
    )
    assert frozen.status_code == 409 and "allowed" in frozen.json()["detail"]


async def incident_opened(api: Api, number: str, title: str, item: str | None = None) -> str:
    """An incident recorded by the incidents service, as the correlation consumer reads it."""
    incident_id = f"inc-{number}"
    created = IncidentCreated(
        incident_id=incident_id, actor="rita", status="new", number=number, title=title,
        requester="rita", impact=2, urgency=2, priority="P3", configuration_item=item,
        opened_at=datetime.now(UTC) + timedelta(minutes=1),
    )  # fmt: skip
    envelope = Envelope(
        type=created.event_type, source="/itsm/incidents", subject=incident_id, sequence=1,
        data=created.model_dump(mode="json"),
    )  # fmt: skip
    assert api.bus is not None
    await api.bus.publish(Topic.INCIDENTS, [envelope])
    return incident_id


async def test_the_changes_linked_to_an_incident(api: Api) -> None:
    ours = await api.create(title="Ours")
    theirs = await api.create("other", title="Theirs", implementer=None)
    await api.create(title="Unrelated")
    done = await approved(api, title="Done", configuration_items=["sw-1"])
    await api.act(done, "start", "implementer")
    await api.act(done, "complete", "implementer", {"outcome": "successful"})
    both = await incident_opened(
        api, "INC0000001", f"Since {ours['number']} and {theirs['number']}"
    )
    suggested = await incident_opened(api, "INC0000002", "Switch drops packets", item="sw-1")

    async def linked(incident: str, persona: str = "manager") -> list[str]:
        page = await api.call("GET", f"{BASE}?incident={incident}", persona)
        assert page["total"] == len(page["items"])
        return sorted(c["title"] for c in page["items"])

    await eventually(lambda: linked(both), until=lambda t: t == ["Ours", "Theirs"], what="links")
    await eventually(lambda: linked(suggested), until=lambda t: t == ["Done"], what="suggested")
    assert await linked(both, "requester") == ["Ours"]  # the list keeps its access rules
    assert await linked(both, "other") == ["Theirs"]
    assert await linked(both, "cab") == ["Ours", "Theirs"]  # CAB members see every change
    assert await linked("inc-unknown") == []
    narrowed = await api.call("GET", f"{BASE}?incident={both}&q=ours&limit=1", "manager")
    assert [c["title"] for c in narrowed["items"]] == ["Ours"] and narrowed["total"] == 1
    for bad in ("", "x" * 201):
        response = await api.client.get(f"{BASE}?incident={bad}", headers=api.h("manager"))
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "incident" in response.text


# Idempotent creates (`Idempotency-Key`, shared/store/idempotency.py).


async def create_with_key(
    api: Api, key: str | bytes | None, persona: str = "requester", **fields: Any
) -> httpx.Response:
    body = {
        "title": "Upgrade core router firmware", "change_type": "normal",
        "configuration_items": ["rtr-1"],
        "plan": {"implementation": "flash", "backout": "reflash", "test": "ping"},
        **fields,
    }  # fmt: skip
    headers: dict[str, str | bytes] = {**api.h(persona)}
    if key is not None:
        headers["Idempotency-Key"] = key
    return await api.client.post(BASE, json=body, headers=headers)


async def changes_listed(api: Api) -> list[str]:
    return [c["id"] for c in (await api.call("GET", BASE, "manager"))["items"]]


async def test_a_repeated_change_request_answers_the_same_change_and_records_it_once(
    api: Api,
) -> None:
    first = await create_with_key(api, "chg-retry-1")
    again = await create_with_key(api, "chg-retry-1")

    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["number"] == first.json()["number"] == "CHG0000001"
    assert again.headers["Location"] == first.headers["Location"]
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await changes_listed(api) == [first.json()["id"]]
    published = await eventually(
        lambda: _records(api, Topic.CHANGES), until=lambda records: len(records) >= 1
    )
    assert [decode(r).type for r in published] == ["itsm.change.created.v1"]  # once


async def test_copies_of_one_change_request_racing_each_other_record_one_change(api: Api) -> None:
    answers = await asyncio.gather(*(create_with_key(api, "chg-storm") for _ in range(5)))

    assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum("Idempotent-Replayed" in a.headers for a in answers) == 4
    assert len(await changes_listed(api)) == 1


async def test_a_change_key_with_another_request_or_another_caller(api: Api) -> None:
    assert (await create_with_key(api, "chg-k")).status_code == 201
    other = await create_with_key(api, "chg-k", title="Replace core switch")
    assert other.status_code == 422, other.text
    assert other.headers["content-type"].startswith("application/problem+json")
    assert "Idempotency-Key" in other.json()["detail"]

    # Another caller's same key is another request: a change of their own.
    theirs = await create_with_key(api, "chg-k", persona="other")
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs.headers
    assert len(await changes_listed(api)) == 2


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "é".encode("latin-1")])
async def test_a_malformed_change_key_is_a_422_naming_the_header(
    api: Api, key: str | bytes
) -> None:
    response = await create_with_key(api, key)

    assert response.status_code == 422, response.text
    assert "Idempotency-Key" in response.text
    assert await changes_listed(api) == []


async def _records(api: Api, topic: str) -> list[Any]:
    assert api.bus is not None
    return list(api.bus.records(topic))
