"""Audit: every privileged action is recorded with actor, time and source address, and read
back by admins through `GET /api/v1/audit/<service>`; the audit trail and the timeline are
append-only through the API.

Privileged actions are sent over loopback to real servers from their own source addresses
(127.0.0.5, and 127.0.0.9 standing for a trusted reverse proxy that sets X-Forwarded-For), and
each entry of the service's audit log is checked: who, when (between the request's start and
its answer), from where, what (method, route, target) and how it ended.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from launcher.embedded import create_embedded_app
from shared.runtime import in_memory
from tests.security.services import FACTORIES, SERVICES, Tokens, build_app, operations, settings_for
from tests.support.apps import asgi_client, client_from, http_server

CLIENT = "127.0.0.5"
PROXY = "127.0.0.9"  # trusted: its X-Forwarded-For names the client
START = datetime(2031, 3, 3, 22, 0, tzinfo=UTC)


@dataclass
class Service:
    app: FastAPI
    base_url: str


@dataclass
class Platform:
    services: dict[str, Service]
    tokens: Tokens

    def client(self, service: str, address: str = CLIENT) -> httpx.AsyncClient:
        return client_from(address, self.services[service].base_url)

    async def audit_log(self, service: str, **filters: str) -> list[dict[str, Any]]:
        """The service's audit log, newest first, read through its API as an admin."""
        entries: list[dict[str, Any]] = []
        async with self.client(service) as api:
            while True:
                answer = await api.get(
                    f"/api/v1/audit/{service}",
                    params={**filters, "limit": 100, "offset": len(entries)},
                    headers=self.tokens.headers("auditor", "admin"),
                )
                assert answer.status_code == 200, answer.text
                page = answer.json()
                entries += [{**e, "at": datetime.fromisoformat(e["at"])} for e in page["items"]]
                if len(entries) >= page["total"] or not page["items"]:
                    return entries


def audited_app(service: str, signing_key: str) -> FastAPI:
    settings = settings_for(service, signing_key).model_copy(
        update={"trusted_proxies": [ip_network(f"{PROXY}/32")]}
    )
    return FACTORIES[service](settings, in_memory(settings))


@pytest.fixture(scope="module")
async def platform(signing_key: str) -> AsyncIterator[Platform]:
    async with AsyncExitStack() as stack:
        running = {}
        for name in SERVICES:
            app = audited_app(name, signing_key)
            client = await stack.enter_async_context(http_server(app))
            running[name] = Service(app, str(client.base_url))
        yield Platform(running, Tokens(signing_key))


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def new_change_awaiting_approval(platform: Platform) -> str:
    """A normal change through submit and assessment, answered by its id."""
    async with platform.client("changes") as api:
        manager = platform.tokens.headers("mona", "change-manager")
        await api.post("/api/v1/configuration-items", json={"name": "rtr-a"}, headers=manager)
        body = {
            "title": "Upgrade router firmware", "change_type": "normal", "implementer": "ivan",
            "configuration_items": ["rtr-a"],
            "plan": {"implementation": "flash", "backout": "reflash", "test": "ping",
                     "backout_tested": True},
            "planned_start": START.isoformat(),
            "planned_end": (START + timedelta(hours=1)).isoformat(),
        }  # fmt: skip
        requester = platform.tokens.headers("rita", "requester")
        created = await api.post("/api/v1/changes", json=body, headers=requester)
        assert created.status_code == 201, created.text
        change_id = created.json()["id"]
        for action, who in (("submit", requester), ("assessment", manager)):
            answer = await api.post(f"/api/v1/changes/{change_id}/{action}", json={}, headers=who)
            assert answer.status_code == 200, answer.text
        return str(change_id)


def privileged_actions() -> list[tuple[str, str, str, str, dict[str, Any], tuple[str, ...]]]:
    """(service, area, method, path, body, roles) of one action of each privileged kind."""
    calendar = {
        "id": unique("cal"), "name": "Office", "time_zone": "Europe/Berlin",
        "hours": {"mon": ["08:00-17:00"]},
    }  # fmt: skip
    group = {"name": unique("net"), "tier": "L2", "members": ["otto"], "manager": "maria"}
    policy = {
        "id": unique("pol"), "name": "P1 paging",
        "match": {"event_types": ["itsm.incident.created.v1"], "priorities": ["P1"]},
        "levels": [{"delay_seconds": 0, "targets": [{"kind": "user", "name": "ann"}],
                    "channels": ["email"]}],
    }  # fmt: skip
    return [
        ("sla", "sla.policies", "POST", "/api/v1/sla/calendars", calendar, ("manager",)),
        ("incidents", "incidents.groups", "POST", "/api/v1/groups", group, ("admin",)),
        (
            "changes",
            "changes.catalog",
            "PUT",
            "/api/v1/approval-groups/cab",
            {"members": ["carla"]},
            ("change-manager",),
        ),
        ("notify", "notify.policies", "POST", "/api/v1/notify/policies", policy, ("manager",)),
        (
            "notify",
            "notify.directory",
            "PUT",
            "/api/v1/notify/people/ann",
            {"name": "Ann", "email": "ann@example.com"},
            ("admin",),
        ),
    ]


def assert_entry(
    entry: dict[str, Any], *, actor: str, source: str, before: datetime, after: datetime
) -> None:
    assert entry["actor"] == actor
    assert entry["source_address"] == source
    at = entry["at"] if entry["at"].tzinfo else entry["at"].replace(tzinfo=UTC)
    assert before <= at <= after, (before, at, after)


@pytest.mark.parametrize(
    ("service", "area", "method", "path", "body", "roles"),
    privileged_actions(),
    ids=[f"{a[1]} {a[2]} {a[3]}" for a in privileged_actions()],
)
async def test_a_privileged_action_records_actor_time_and_source_address(
    platform: Platform, service: str, area: str, method: str, path: str, body: Any,
    roles: tuple[str, ...],
) -> None:  # fmt: skip
    actor = unique("boss")
    headers = platform.tokens.headers(actor, *roles)
    before = datetime.now(UTC)
    async with platform.client(service) as api:
        answer = await api.request(method, path, json=body, headers=headers)
    after = datetime.now(UTC)
    assert answer.status_code in (200, 201), answer.text
    [entry] = [e for e in await platform.audit_log(service) if e["actor"] == actor]
    assert_entry(entry, actor=actor, source=CLIENT, before=before, after=after)
    assert (entry["area"], entry["method"], entry["path"]) == (area, method, path)
    assert (entry["status"], entry["outcome"]) == (answer.status_code, "done")
    assert entry["roles"] == sorted(roles)


async def test_a_change_approval_is_recorded_and_the_audit_trail_only_grows(
    platform: Platform,
) -> None:
    change_id = await new_change_awaiting_approval(platform)
    approver = unique("cm")
    headers = platform.tokens.headers(approver, "change-manager")
    async with platform.client("changes") as api:
        trail_before = (
            await api.get(f"/api/v1/changes/{change_id}/timeline", headers=headers)
        ).json()
        before = datetime.now(UTC)
        approved = await api.post(
            f"/api/v1/changes/{change_id}/approvals", json={"decision": "approve"}, headers=headers
        )
        after = datetime.now(UTC)
        assert approved.status_code == 200, approved.text
        trail_after = (
            await api.get(f"/api/v1/changes/{change_id}/timeline", headers=headers)
        ).json()
    [entry] = [e for e in await platform.audit_log("changes") if e["actor"] == approver]
    assert_entry(entry, actor=approver, source=CLIENT, before=before, after=after)
    assert entry["route"] == "/api/v1/changes/{change_id}/approvals"
    assert entry["target"] == {"change_id": change_id} and entry["area"] == "changes.approvals"
    # The change's own audit trail: the approval was appended, nothing before it changed.
    items_before, items_after = _items(trail_before), _items(trail_after)
    assert items_after[: len(items_before)] == items_before
    assert len(items_after) > len(items_before) and items_after[-1]["actor"] == approver


def _items(trail: Any) -> list[dict[str, Any]]:
    return list(trail["items"] if isinstance(trail, dict) else trail)


async def test_a_refused_privileged_attempt_is_recorded_and_an_anonymous_one_is_not(
    platform: Platform,
) -> None:
    intruder = unique("rita")
    body = {"members": ["mallory"]}
    async with platform.client("changes") as api:
        refused = await api.put(
            "/api/v1/approval-groups/cab", json=body,
            headers=platform.tokens.headers(intruder, "requester"),
        )  # fmt: skip
        assert refused.status_code == 403
        anonymous = await api.put("/api/v1/approval-groups/cab", json=body)
        assert anonymous.status_code == 401
        count = len(await platform.audit_log("changes"))
        # Reads are not privileged actions.
        read = await api.get(
            "/api/v1/approval-groups", headers=platform.tokens.headers("x", "admin")
        )
        assert len(await platform.audit_log("changes")) == count, read.status_code
    [entry] = [e for e in await platform.audit_log("changes") if e["actor"] == intruder]
    assert (entry["status"], entry["outcome"], entry["source_address"]) == (403, "refused", CLIENT)


@pytest.mark.parametrize(
    ("peer", "forwarded", "recorded"),
    [
        (PROXY, "198.51.100.7", "198.51.100.7"),  # a trusted proxy names the client
        (PROXY, "6.6.6.6, 198.51.100.8", "198.51.100.8"),  # the nearest untrusted hop
        (CLIENT, "198.51.100.9", CLIENT),  # anyone else's header is ignored
    ],
)
async def test_the_source_address_behind_a_reverse_proxy(
    platform: Platform, peer: str, forwarded: str, recorded: str
) -> None:
    actor = unique("maria")
    headers = {**platform.tokens.headers(actor, "manager"), "X-Forwarded-For": forwarded}
    async with platform.client("notify", address=peer) as api:
        answer = await api.put(
            f"/api/v1/notify/people/{unique('p')}", json={"name": "P"}, headers=headers
        )
    assert answer.status_code in (200, 201), answer.text
    [entry] = [e for e in await platform.audit_log("notify") if e["actor"] == actor]
    assert entry["source_address"] == recorded


# --- reading the log: GET /api/v1/audit/<service> --------------------------------------------


async def test_the_log_is_read_by_admins_only_filtered_and_newest_first(
    platform: Platform,
) -> None:
    actor = unique("maria")
    headers = platform.tokens.headers(actor, "manager")
    async with platform.client("notify") as api:
        for person in ("p1", "p2"):
            answer = await api.put(
                f"/api/v1/notify/people/{unique(person)}", json={"name": "P"}, headers=headers
            )
            assert answer.status_code in (200, 201), answer.text
        refused = await api.delete(f"/api/v1/notify/policies/{unique('pol')}", headers=headers)
        assert refused.status_code in (403, 404), refused.text
        for role in ("manager", "agent", "service"):
            answer = await api.get(
                "/api/v1/audit/notify", headers=platform.tokens.headers("x", role)
            )
            assert answer.status_code == 403, role
    mine = await platform.audit_log("notify", actor=actor)
    assert [e["method"] for e in mine] == ["DELETE", "PUT", "PUT"]  # newest first
    assert mine == sorted(mine, key=lambda e: e["at"], reverse=True)
    done = await platform.audit_log("notify", actor=actor, outcome="done")
    assert [e["id"] for e in done] == [e["id"] for e in mine[1:]]
    directory = await platform.audit_log("notify", actor=actor, area="notify.directory")
    assert len(directory) == 2
    window = {"from": mine[1]["at"].isoformat(), "to": mine[0]["at"].isoformat()}
    assert [e["id"] for e in await platform.audit_log("notify", actor=actor, **window)] == [
        mine[1]["id"]
    ]


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"area": "incidents.groups"}, "this service's"),
        ({"from": "2031-03-03T22:00:00"}, "timezone"),
        ({"from": "2031-03-04T00:00:00Z", "to": "2031-03-03T00:00:00Z"}, "before"),
        ({"outcome": "maybe"}, "outcome"),
        ({"limit": "1000"}, "limit"),
    ],
)
async def test_a_bad_log_query_is_a_422_that_says_what_is_wrong(
    platform: Platform, params: dict[str, str], complaint: str
) -> None:
    async with platform.client("notify") as api:
        answer = await api.get(
            "/api/v1/audit/notify", params=params, headers=platform.tokens.headers("a", "admin")
        )
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert complaint in answer.text


async def test_each_service_reads_its_own_areas_from_a_shared_log(signing_key: str) -> None:
    """Embedded mode: one process, one audit log collection; each service's route answers
    only for its own areas."""
    tokens = Tokens(signing_key)
    app = create_embedded_app(settings_for("incidents", signing_key))
    async with asgi_client(app) as api:
        group = {"name": unique("net"), "tier": "L2", "members": ["otto"]}
        created = await api.post("/api/v1/groups", json=group, headers=tokens.headers("a", "admin"))
        assert created.status_code == 201, created.text
        calendar = {
            "id": unique("cal"), "name": "C", "time_zone": "UTC", "hours": {"mon": ["08:00-17:00"]},
        }  # fmt: skip
        answer = await api.post(
            "/api/v1/sla/calendars", json=calendar, headers=tokens.headers("m", "manager")
        )
        assert answer.status_code == 201, answer.text
        areas = {}
        for service in SERVICES:
            read = await api.get(f"/api/v1/audit/{service}", headers=tokens.headers("a", "admin"))
            assert read.status_code == 200, read.text
            areas[service] = sorted({e["area"] for e in read.json()["items"]})
    assert areas == {
        "incidents": ["incidents.groups"], "changes": [], "sla": ["sla.policies"], "notify": [],
    }  # fmt: skip


# --- append-only through the API, from the OpenAPI documents --------------------------------

TRAIL_WORDS = ("audit", "timeline", "history")
TRAIL_MEMBERS = {*TRAIL_WORDS, "audit_trail", "entries"}


@pytest.mark.parametrize("service", SERVICES)
def test_audit_trails_and_timelines_have_no_route_that_changes_them(
    service: str, signing_key: str
) -> None:
    """No operation writes to a path of an audit trail, a timeline or a history (only GET),
    and no request body anywhere carries a member by those names: entries are appended by the
    actions themselves, never edited, replaced or deleted through the API."""
    app = build_app(service, signing_key)
    trails = []
    for operation in operations(service, app):
        segments = operation.path.lower().split("/")
        if any(word in segment for segment in segments for word in TRAIL_WORDS):
            trails.append(operation.label)
            assert operation.method == "GET", f"{operation.label} changes an audit trail"
        taken = _body_members(app, operation.spec) & TRAIL_MEMBERS
        assert not taken, f"{operation.label} takes {taken} in its body"
    if service in ("incidents", "changes"):  # they have trails: the check is not vacuous
        assert trails, f"{service}: no audit trail or timeline route found"


def _body_members(app: FastAPI, spec: dict[str, Any]) -> set[str]:
    """The property names of the request body schema (one level, references resolved)."""
    content = spec.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = app.openapi()["components"]["schemas"][name]
    return {member.lower() for member in schema.get("properties", {})}


async def test_the_audit_log_itself_has_no_route(signing_key: str) -> None:
    """The privileged-action log is written by the HTTP layer only: no operation of any
    service reaches it."""
    for service in SERVICES:
        app = build_app(service, signing_key)
        async with asgi_client(app):
            assert app.state.audit_log is not None
        paths = [operation.path for operation in operations(service, app)]
        assert not [p for p in paths if "audit-log" in p or "audit_log" in p]
