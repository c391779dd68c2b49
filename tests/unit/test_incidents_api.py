"""The incidents API on the in-memory adapters: lifecycle endpoints, errors, filters, timeline,
alert intake and the full authorization matrix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from services.incidents import intake
from services.incidents.main import IncidentsSettings, create_app
from shared.bus.memory import InMemoryBus
from shared.contracts import Topic
from shared.contracts.codec import decode
from shared.runtime import Runtime, in_memory
from shared.settings import ServiceSettings
from tests.support.apps import asgi_client
from tests.support.incidents import BASE, PERSONAS, Auth, World
from tests.support.polling import eventually


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(settings: ServiceSettings, clock: Clock) -> Runtime:
    runtime = in_memory(settings, InMemoryBus())
    runtime.clock = clock
    return runtime


@pytest.fixture
async def world(settings: ServiceSettings, runtime: Runtime, auth: Auth) -> AsyncIterator[World]:
    config = IncidentsSettings(**settings.model_dump(), auto_close_interval_seconds=3600)
    async with asgi_client(create_app(config, runtime)) as client:
        w = World(client, auth)
        await w.setup_groups()
        yield w


async def test_create_answers_the_incident_with_priority_location_and_etag(world: World) -> None:
    response = await world.client.post(
        BASE, json={"title": "VPN drops", "impact": 2, "urgency": 1, "category": "network"},
        headers=world.headers("owner"),
    )  # fmt: skip
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["priority"] == "P2" and body["status"] == "new" and body["requester"] == "alice"
    assert body["number"] == "INC0000001" and body["version"] == 1
    assert response.headers["location"] == f"{BASE}/{body['id']}"
    assert response.headers["etag"] == '"1"'


async def test_every_action_publishes_its_event_with_increasing_sequence(
    world: World, runtime: Runtime
) -> None:
    incident = await world.incident()
    iid = incident["id"]
    await world.do(iid, "start", "member")
    await world.do(iid, "replies", "member", {"body": "looking"})
    await world.do(iid, "resolve", "member", {"code": "fixed", "notes": "rebooted"})
    bus = runtime.bus
    assert isinstance(bus, InMemoryBus)

    async def ours() -> list:
        return [e for e in map(decode, bus.records(Topic.INCIDENTS)) if e.subject == iid]

    events = await eventually(ours, until=lambda es: len(es) == 5, what="five events")
    assert [e.type.split(".")[2] for e in events] == [
        "created", "assigned", "status_changed", "replied", "resolved",
    ]  # fmt: skip
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]


async def test_a_forbidden_transition_is_409_naming_the_allowed_next_states(world: World) -> None:
    incident = await world.incident(assign=False)
    response = await world.client.post(
        f"{BASE}/{incident['id']}/start", headers=world.headers("manager")
    )
    assert response.status_code == 409
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["allowed_next_states"] == ["assigned", "cancelled", "resolved"]
    assert "cannot start an incident that is new" in problem["detail"]


async def test_bad_input_names_the_field_and_unknown_ids_are_404(world: World) -> None:
    owner = world.headers("owner")
    bad = await world.client.post(
        BASE, json={"title": " ", "impact": 9, "status": "closed"}, headers=owner
    )
    assert bad.status_code == 422
    assert {"body.title", "body.impact", "body.status"} <= {
        e["location"] for e in bad.json()["errors"]
    }
    missing = await world.client.get(f"{BASE}/01234567-89ab-7def-8123-456789abcdef", headers=owner)
    assert (
        missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    )
    incident = await world.incident()
    no_notes = await world.client.post(
        f"{BASE}/{incident['id']}/resolve", json={"code": "fixed", "notes": "   "},
        headers=world.headers("member"),
    )  # fmt: skip
    assert no_notes.status_code == 422


async def test_stale_versions_are_refused_and_nothing_is_half_written(world: World) -> None:
    incident = await world.incident()
    url = f"{BASE}/{incident['id']}"
    member = world.headers("member")
    missing = await world.client.patch(url, json={"title": "x"}, headers=member)
    assert missing.status_code == 428
    ok = await world.client.patch(
        url, json={"title": "VPN drops hourly"}, headers={**member, "If-Match": '"2"'}
    )
    assert ok.status_code == 200 and ok.headers["etag"] == '"3"'
    stale = await world.client.post(f"{url}/start", headers={**member, "If-Match": '"2"'})
    assert stale.status_code == 412 and stale.json()["current_version"] == 3
    current = (await world.client.get(url, headers=member)).json()
    assert current["status"] == "assigned" and current["version"] == 3


async def test_lists_filter_and_page(world: World) -> None:
    a = await world.incident(title="Printer jammed")
    await world.incident(title="VPN drops", assign=False)
    await world.do(
        a["id"], "classification", "member", {"impact": 1, "urgency": 1, "reason": "exec"}
    )
    manager = world.headers("manager")

    async def titles(query: str) -> list[str]:
        response = await world.client.get(f"{BASE}?{query}", headers=manager)
        assert response.status_code == 200, response.text
        return [i["title"] for i in response.json()["items"]]

    assert await titles("status=assigned") == ["Printer jammed"]
    assert await titles("priority=P1") == ["Printer jammed"]
    assert await titles("group=service-desk") == ["Printer jammed"]
    assert await titles("requester=alice&q=vpn") == ["VPN drops"]
    assert await titles("q=.*") == []  # text is literal, not a pattern
    assert await titles(
        "created_from=2026-12-04T00:00:00Z&created_to=2026-12-05T00:00:00Z&limit=1"
    ) == ["VPN drops"]
    assert await titles("created_from=2026-12-05T00:00:00Z") == []
    assert (await world.client.get(f"{BASE}?limit=101", headers=manager)).status_code == 422
    assert (await world.client.get(f"{BASE}?status=open", headers=manager)).status_code == 422


async def test_list_scopes_follow_object_level_access(world: World) -> None:
    mine = await world.incident(title="mine")
    await world.client.post(BASE, json={"title": "bob's"}, headers=world.headers("stranger"))

    async def visible(persona: str) -> set[str]:
        response = await world.client.get(BASE, headers=world.headers(persona))
        return {i["title"] for i in response.json()["items"]}

    assert await visible("owner") == {"mine"}
    assert await visible("stranger") == {"bob's"}
    assert await visible("member") == {"mine", "bob's"}  # group's + unassigned triage queue (L1)
    assert await visible("outsider") == set()  # L2 only: neither its group's nor the queue
    assert await visible("manager") == {"mine", "bob's"}
    assert mine["assignment_group"] == "service-desk"
    assert (await world.client.get(BASE, headers=world.headers("machine"))).status_code == 403


async def test_the_timeline_shows_every_change_and_hides_internal_notes_from_requesters(
    world: World,
) -> None:
    incident = await world.incident()
    iid = incident["id"]
    await world.do(iid, "work-notes", "member", {"body": "suspect the firewall"})
    await world.do(iid, "replies", "member", {"body": "we are on it"})
    await world.do(iid, "classification", "member", {"impact": 1, "urgency": 1, "reason": "CEO"})
    staff = (
        await world.client.get(f"{BASE}/{iid}/timeline", headers=world.headers("member"))
    ).json()
    assert [e["events"] for e in staff] == [
        ["created"], ["assigned"], ["work_note_added"], ["replied"], ["reprioritized"],
    ]  # fmt: skip
    last = staff[-1]
    assert last["actor"] == "ann" and last["reason"] == "CEO"
    assert last["changes"]["priority"] == {"before": "P2", "after": "P1"}
    assert staff[1]["changes"]["assignment_group"] == {"before": None, "after": "service-desk"}
    public = (
        await world.client.get(f"{BASE}/{iid}/timeline", headers=world.headers("owner"))
    ).json()
    assert [e["events"] for e in public] == [["created"], ["replied"], ["reprioritized"]]


async def test_requester_lifecycle_confirm_rate_and_reopen(world: World, clock: Clock) -> None:
    incident = await world.resolved()
    iid = incident["id"]
    assert incident["first_contact_resolution"] is True
    rated = await world.do(iid, "rating", "owner", {"score": 5, "comment": "fast"})
    assert rated["csat_score"] == 5
    twice = await world.client.post(
        f"{BASE}/{iid}/rating", json={"score": 1}, headers=world.headers("owner")
    )
    assert twice.status_code == 409
    clock.now += timedelta(days=2)
    reopened = await world.do(iid, "reopen", "owner", {"reason": "it's back"})
    assert reopened["status"] == "in_progress" and reopened["reopen_count"] == 1
    again = await world.do(iid, "resolve", "member", {"code": "fixed", "notes": "for real"})
    assert again["first_contact_resolution"] is False
    closed = await world.do(iid, "close", "owner")
    assert closed["status"] == "closed" and closed["closure"] == "confirmed"


async def test_resolved_incidents_close_automatically_after_the_configured_days(
    world: World, clock: Clock, runtime: Runtime
) -> None:
    incident = await world.resolved()
    service = world.client._transport.app.state.incidents  # type: ignore[attr-defined]
    clock.now += timedelta(days=2)
    assert await intake.close_overdue(service, now=clock.now) == 0
    clock.now += timedelta(days=1, minutes=1)
    assert await intake.close_overdue(service, now=clock.now) == 1
    closed = (
        await world.client.get(f"{BASE}/{incident['id']}", headers=world.headers("owner"))
    ).json()
    assert closed["status"] == "closed" and closed["closure"] == "automatic"
    late = await world.client.post(
        f"{BASE}/{incident['id']}/reopen", json={"reason": "x"}, headers=world.headers("owner")
    )
    assert late.status_code == 409


async def test_children_are_resolved_with_their_parent(world: World) -> None:
    parent = await world.incident(title="Core switch down")
    children = [await world.incident(title=f"Can't reach share {i}") for i in range(2)]
    await world.do(parent["id"], "major", "member", {"reason": "whole site"})
    for child in children:
        linked = await world.do(child["id"], "parent", "member", {"parent_id": parent["id"]})
        assert linked["parent_id"] == parent["id"]
    await world.do(parent["id"], "resolve", "member", {"code": "fixed", "notes": "switch replaced"})
    member = world.headers("member")

    async def statuses() -> list[str]:
        return [
            (await world.client.get(f"{BASE}/{c['id']}", headers=member)).json()["status"]
            for c in children
        ]

    await eventually(statuses, until=lambda s: s == ["resolved", "resolved"], what="cascade")
    child = (await world.client.get(f"{BASE}/{children[0]['id']}", headers=member)).json()
    assert "switch replaced" in child["resolution_notes"]


def alertmanager(status: str, fingerprint: str, starts: str, **labels: str) -> dict:
    return {
        "version": "4",
        "status": status,
        "receiver": "itsm",
        "groupKey": '{}:{alertname="DiskFull"}',
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "DiskFull", "severity": "critical", **labels},
                "annotations": {"summary": "Disk full on db-1"},
                "startsAt": starts,
                "endsAt": "2026-12-04T09:30:00Z"
                if status == "resolved"
                else "0001-01-01T00:00:00Z",
                "fingerprint": fingerprint,
            }
        ],
    }


async def test_alertmanager_webhook_opens_dedupes_and_resolves(world: World) -> None:
    machine = world.headers("machine")
    url = "/api/v1/alerts/alertmanager"
    for starts in ("2026-12-04T08:50:00Z", "2026-12-04T08:55:00Z", "2026-12-04T08:55:00Z"):
        accepted = await world.client.post(
            url, json=alertmanager("firing", "fp-9", starts), headers=machine
        )
        assert accepted.status_code == 202 and accepted.json()["accepted"] == 1
    manager = world.headers("manager")

    async def from_alert() -> list[dict]:
        items = (await world.client.get(f"{BASE}?status=new", headers=manager)).json()["items"]
        return [i for i in items if i["alert"] and i["alert"]["occurrences"] == 2]

    [incident] = await eventually(from_alert, what="an incident with 2 occurrences")
    assert incident["opened_at"].startswith("2026-12-04T08:50:00")
    assert incident["priority"] == "P1" and incident["title"] == "Disk full on db-1"
    await world.client.post(
        url, json=alertmanager("resolved", "fp-9", "2026-12-04T08:50:00Z"), headers=machine
    )

    async def status() -> str:
        return (await world.client.get(f"{BASE}/{incident['id']}", headers=manager)).json()[
            "status"
        ]

    await eventually(status, until=lambda s: s == "resolved", what="auto-resolve")
    for persona in ("owner", "member", "manager"):
        denied = await world.client.post(
            url,
            json=alertmanager("firing", "fp-9", "2026-12-04T08:50:00Z"),
            headers=world.headers(persona),
        )
        assert denied.status_code == 403


async def test_agents_see_all_when_configured(
    settings: ServiceSettings, runtime: Runtime, auth: Auth
) -> None:
    config = IncidentsSettings(**settings.model_dump(), agents_see_all=True)
    async with asgi_client(create_app(config, runtime)) as client:
        world = World(client, auth)
        await world.setup_groups()
        incident = await world.incident()
        seen = await client.get(f"{BASE}/{incident['id']}", headers=world.headers("outsider"))
        assert seen.status_code == 200


# The authorization matrix. Columns follow PERSONAS: owner, stranger, member (agent of the
# incident's group), outsider (agent of another group), manager, change manager, machine.
OPEN = "open"
RESOLVED = "resolved"
READ = (200, 404, 200, 404, 200, 200, 403)
OWNER_OR_STAFF = (200, 404, 200, 404, 200, 403, 403)
STAFF_ONLY = (403, 404, 200, 404, 200, 403, 403)
MATRIX = [
    ("GET", "", None, OPEN, READ),
    ("PATCH", "", {"title": "renamed"}, OPEN, OWNER_OR_STAFF),
    ("GET", "/timeline", None, OPEN, READ),
    ("POST", "/classification", {"impact": 1, "urgency": 1, "reason": "r"}, OPEN, STAFF_ONLY),
    ("POST", "/assignment", {"group": "service-desk", "assignee": "ann"}, OPEN, STAFF_ONLY),
    ("POST", "/escalation", {"to_group": "network", "reason": "r"}, OPEN, STAFF_ONLY),
    ("POST", "/manager-escalation", {"reason": "r"}, OPEN, STAFF_ONLY),
    ("POST", "/start", None, OPEN, STAFF_ONLY),
    ("POST", "/hold", {"reason": "awaiting_vendor"}, OPEN, STAFF_ONLY),
    ("POST", "/replies", {"body": "hello"}, OPEN, OWNER_OR_STAFF),
    ("POST", "/work-notes", {"body": "internal"}, OPEN, STAFF_ONLY),
    ("POST", "/watchers", {"add": ["dave"]}, OPEN, OWNER_OR_STAFF),
    ("POST", "/major", {"reason": "r"}, OPEN, STAFF_ONLY),
    ("POST", "/resolve", {"code": "fixed", "notes": "n"}, OPEN, STAFF_ONLY),
    ("POST", "/cancel", {"reason": "dup"}, OPEN, STAFF_ONLY),
    ("POST", "/close", None, RESOLVED, (200, 404, 403, 404, 200, 403, 403)),
    ("POST", "/reopen", {"reason": "again"}, RESOLVED, OWNER_OR_STAFF),
    ("POST", "/rating", {"score": 4}, RESOLVED, (200, 404, 403, 404, 403, 403, 403)),
]
CASES = [
    pytest.param(
        method, path, body, state, persona, statuses[i], id=f"{method}{path or ' /'}-{persona}"
    )
    for method, path, body, state, statuses in MATRIX
    for i, persona in enumerate(PERSONAS)
]


@pytest.mark.parametrize(("method", "path", "body", "state", "persona", "expected"), CASES)
async def test_authorization_matrix(
    world: World, method: str, path: str, body: dict | None, state: str, persona: str, expected: int
) -> None:
    incident = await (world.resolved() if state == RESOLVED else world.incident())
    headers = world.headers(persona)
    if method == "PATCH":
        headers["If-Match"] = f'"{incident["version"]}"'
    response = await world.client.request(
        method, f"{BASE}/{incident['id']}{path}", json=body, headers=headers
    )
    assert response.status_code == expected, response.text
    if expected >= 400:
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("persona", PERSONAS)
async def test_guessed_ids_are_not_found_for_everyone(world: World, persona: str) -> None:
    response = await world.client.get(f"{BASE}/does-not-exist", headers=world.headers(persona))
    assert response.status_code == (403 if persona == "machine" else 404)


async def test_group_administration_is_for_managers(world: World) -> None:
    group = {"name": "db-team", "tier": "L2", "members": ["dora"]}
    for persona in ("owner", "member", "change_manager", "machine"):
        denied = await world.client.post(
            "/api/v1/groups", json=group, headers=world.headers(persona)
        )
        assert denied.status_code == 403
    created = await world.client.post(
        "/api/v1/groups", json=group, headers=world.headers("manager")
    )
    assert created.status_code == 201
    duplicate = await world.client.post(
        "/api/v1/groups", json=group, headers=world.headers("manager")
    )
    assert duplicate.status_code == 409
    updated = await world.client.put(
        "/api/v1/groups/db-team/members", json={"members": ["dora", "dan"]},
        headers={**world.headers("manager"), "If-Match": '"1"'},
    )  # fmt: skip
    assert updated.json()["members"] == ["dora", "dan"]
    listed = await world.client.get("/api/v1/groups", headers=world.headers("member"))
    assert listed.json()["total"] == 3


async def test_health_endpoints(world: World) -> None:
    assert (await world.client.get("/livez")).json() == {"status": "ok"}
    assert (await world.client.get("/readyz")).status_code == 200
    assert "itsm_http_requests_total" in (await world.client.get("/metrics")).text


async def test_oversized_bodies_are_refused_with_413(world: World) -> None:
    huge = {"title": "x", "description": "x" * 2_000_000}
    response = await world.client.post(BASE, json=huge, headers=world.headers("owner"))
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer not-a-jwt"}, 401),
        ({"Authorization": "Basic YQ=="}, 401),
    ],
    ids=["missing", "garbage", "wrong-scheme"],
)
async def test_unauthenticated_calls_get_401(world: World, headers: dict, status: int) -> None:
    response = await world.client.post(BASE, json={"title": "x"}, headers=headers)
    assert response.status_code == status and response.json()["detail"]


async def test_groups_are_published_and_those_stored_before_once_at_start(
    settings: ServiceSettings, runtime: Runtime, auth: Auth
) -> None:
    """A group's creation and member changes publish it (`itsm.group.saved.v1`, sequence = its
    version); a group stored before groups were published (an upgrade) is published once when
    the service starts, as a new version, and a restart publishes nothing more."""
    groups = runtime.database["assignment_groups"]
    legacy = {"_id": "network", "tier": "L2", "members": ["otto"], "manager": None, "version": 3}
    await groups.insert_one({**legacy, "outbox": []})
    bus = runtime.bus
    assert isinstance(bus, InMemoryBus)
    config = IncidentsSettings(**settings.model_dump())

    async def published() -> list[tuple[str, int, list[str]]]:
        events = [decode(r) for r in bus.records(Topic.INCIDENTS)]
        return [
            (e.subject, e.sequence, e.data["members"])
            for e in events
            if e.type == "itsm.group.saved.v1"
        ]

    async with asgi_client(create_app(config, runtime)) as client:
        await eventually(published, until=lambda p: len(p) == 1, what="the legacy group")
        desk = {"name": "desk", "tier": "L1", "members": ["ann"]}
        admin = auth("root", "admin")
        assert (await client.post("/api/v1/groups", json=desk, headers=admin)).status_code == 201
        members = {"members": ["ann", "bea"]}
        changed = await client.put("/api/v1/groups/desk/members", json=members, headers=admin)
        assert changed.status_code == 200, changed.text
        await eventually(published, until=lambda p: len(p) == 3, what="the desk's two versions")
    async with asgi_client(create_app(config, runtime)):  # a restart
        stored = await groups.find_one({"_id": "network"})
    assert stored["version"] == 4 and stored["published"] is True and stored["outbox"] == []
    assert sorted(await published()) == [  # partitions hold them in key order only
        ("desk", 1, ["ann"]),
        ("desk", 2, ["ann", "bea"]),
        ("network", 4, ["otto"]),
    ]
