"""Object-level (BOLA) and property-level authorization, across every service (issue #9).

Object level: every "by id" operation (a path parameter addresses an object) is classified
here, and the classification must cover exactly the operations in the OpenAPI documents:

- SCOPED: the object belongs to some users. A caller whose role admits the operation but who
  must not see that object gets 404 problem+json (not 403: ids cannot be probed), the answer
  holds nothing of the object, and a write changes nothing;
- SHARED: organisation-wide configuration that every admitted role may read (the role checks
  of test_api_authorization.py are its whole protection), with the reason;
- GAPS: known findings, with the reason (docs/security.md).

Property level: no input model lets a client set a field the server owns. Every object schema
of every request body forbids unknown members (`additionalProperties: false`; only external
formats ignore them), no input model declares a server-owned field unless listed with its rule,
and sending any server-owned field (those the operation answers but does not take, and the
PROTECTED names) is refused with 422 naming it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI

from services.notify.routing import ACK_PATH, Links
from shared.contracts import Topic
from shared.contracts.codec import decode
from tests.security.services import (
    SERVICES,
    Answer,
    Operation,
    Tokens,
    build_app,
    filled_path,
    operations,
    request,
)
from tests.security.world import PEOPLE, Ids, seed
from tests.support.apps import asgi_client

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Scoped:
    intruders: tuple[str, ...]  # personas the route admits who must not see the object
    snapshot: tuple[str, str]  # (persona, path template) that reads the object, to compare
    body: Any = None
    moving: frozenset[str] = frozenset()  # members the clock changes between two reads


INCIDENT = ("admin", "/api/v1/incidents/{incident_id}")
CHANGE = ("admin", "/api/v1/changes/{change_id}")
NOT_THEIRS = ("stranger", "outsider")  # another requester; an agent of another group
NOT_INVOLVED = ("stranger", "member")  # another requester; an agent not on the change
INCIDENT_BODIES: dict[str, Any] = {
    "classification": {"impact": 1, "urgency": 1, "reason": "raise it"},
    "assignment": {"group": "network"},
    "escalation": {"to_group": "network", "reason": "needs L2"},
    "manager-escalation": {"reason": "stuck"},
    "start": None,
    "hold": {"reason": "awaiting_vendor"},
    "resume": None,
    "replies": {"body": "hello"},
    "work-notes": {"body": "internal"},
    "watchers": {"add": ["sam"]},
    "major": {"reason": "widespread"},
    "parent": {"parent_id": "{other_incident}"},
    "resolve": {"code": "fixed", "notes": "rebooted"},
    "close": None,
    "reopen": {"reason": "again"},
    "cancel": {"reason": "duplicate"},
    "rating": {"score": 1},
}
CHANGE_BODIES: dict[str, Any] = {
    "submit": None,
    "assessment": None,
    "approvals": {"decision": "approve"},
    "delegations": {"to": "sam"},
    "start": None,
    "complete": {"outcome": "successful"},
    "review": {"summary": "went fine"},
    "close": None,
    "cancel": {"reason": "not needed"},
    "decline": {"reason": "too risky"},
}
SCOPED: dict[tuple[str, str, str], Scoped] = {
    ("incidents", "GET", "/api/v1/incidents/{incident_id}"): Scoped(NOT_THEIRS, INCIDENT),
    ("incidents", "PATCH", "/api/v1/incidents/{incident_id}"): Scoped(
        NOT_THEIRS, INCIDENT, {"title": "renamed"}
    ),
    ("incidents", "GET", "/api/v1/incidents/{incident_id}/timeline"): Scoped(NOT_THEIRS, INCIDENT),
    **{
        ("incidents", "POST", f"/api/v1/incidents/{{incident_id}}/{action}"): Scoped(
            NOT_THEIRS, INCIDENT, body
        )
        for action, body in INCIDENT_BODIES.items()
    },
    ("changes", "GET", "/api/v1/changes/{change_id}"): Scoped(NOT_INVOLVED, CHANGE),
    ("changes", "PATCH", "/api/v1/changes/{change_id}"): Scoped(
        NOT_INVOLVED, CHANGE, {"title": "renamed"}
    ),
    ("changes", "GET", "/api/v1/changes/{change_id}/risk"): Scoped(NOT_INVOLVED, CHANGE),
    ("changes", "GET", "/api/v1/changes/{change_id}/timeline"): Scoped(NOT_INVOLVED, CHANGE),
    **{
        ("changes", "POST", f"/api/v1/changes/{{change_id}}/{action}"): Scoped(
            NOT_INVOLVED, CHANGE, body
        )
        for action, body in CHANGE_BODIES.items()
    },
    # An agent of another group (the SLA API follows the groups and assignments from the
    # incident events: tests/unit/test_sla_access.py).
    ("sla", "GET", "/api/v1/sla/tickets/{ticket_id}"): Scoped(
        ("outsider",),
        ("admin", "/api/v1/sla/tickets/{ticket_id}"),
        moving=frozenset({"as_of", "remaining_seconds", "percent_used", "elapsed_seconds"}),
    ),
    ("notify", "GET", "/api/v1/notify/escalations/{escalation_id}"): Scoped(
        ("outsider",), ("admin", "/api/v1/notify/escalations/{escalation_id}")
    ),
    ("notify", "POST", "/api/v1/notify/escalations/{escalation_id}/acknowledgement"): Scoped(
        ("outsider",), ("admin", "/api/v1/notify/escalations/{escalation_id}")
    ),
    ("notify", "GET", "/api/v1/notify/people/{user_id}"): Scoped(
        ("outsider",), ("admin", "/api/v1/notify/people/{user_id}")
    ),
    ("notify", "PUT", "/api/v1/notify/people/{user_id}"): Scoped(
        ("outsider",),
        ("admin", "/api/v1/notify/people/{user_id}"),
        {"email": "otto@evil.example"},
    ),
    ("notify", "DELETE", "/api/v1/notify/subscriptions/mine/{kind}"): Scoped(
        ("outsider",), ("member", "/api/v1/notify/subscriptions/mine")
    ),
}
ORG_WIDE = "organisation-wide configuration: every admitted role reads it, managing roles write"
SHARED: dict[tuple[str, str, str], str] = {
    ("incidents", "GET", "/api/v1/groups/{name}"): "assignment groups: whoever records or "
    "works incidents needs them to assign; " + ORG_WIDE,
    ("incidents", "PUT", "/api/v1/groups/{name}/members"): ORG_WIDE,
    ("changes", "PUT", "/api/v1/approval-groups/{name}"): ORG_WIDE + " (CAB membership)",
    **{
        ("sla", method, path): ORG_WIDE + " (contract terms)"
        for method, path in (
            ("GET", "/api/v1/sla/calendars/{calendar_id}"),
            ("PUT", "/api/v1/sla/calendars/{calendar_id}"),
            ("DELETE", "/api/v1/sla/calendars/{calendar_id}"),
            ("GET", "/api/v1/sla/calendars/{calendar_id}/versions"),
            ("GET", "/api/v1/sla/policies/{policy_id}"),
            ("PUT", "/api/v1/sla/policies/{policy_id}"),
            ("DELETE", "/api/v1/sla/policies/{policy_id}"),
            ("GET", "/api/v1/sla/policies/{policy_id}/versions"),
        )
    },
    **{
        ("notify", method, path): ORG_WIDE + " (on-call arrangements)"
        for method, path in (
            ("GET", "/api/v1/notify/policies/{policy_id}"),
            ("PUT", "/api/v1/notify/policies/{policy_id}"),
            ("DELETE", "/api/v1/notify/policies/{policy_id}"),
            ("GET", "/api/v1/notify/policies/{policy_id}/versions/{version}"),
            ("GET", "/api/v1/notify/rotations/{rotation_id}"),
            ("PUT", "/api/v1/notify/rotations/{rotation_id}"),
            ("POST", "/api/v1/notify/rotations/{rotation_id}/overrides"),
            ("GET", "/api/v1/notify/rotations/{rotation_id}/on-call"),
            ("PUT", "/api/v1/notify/groups/{name}"),
            ("GET", "/api/v1/notify/groups/{name}"),
        )
    },
    ("notify", "PUT", "/api/v1/notify/subscriptions/mine/{kind}"): "`{kind}` names a kind, "
    "not an object: the subscription written is always the caller's own",
    ("notify", "GET", "/api/v1/notify/ack/{token}"): "public: the signed link is the "
    "credential (test_a_forged_or_retargeted_ack_link_acknowledges_nothing)",
    ("notify", "POST", "/api/v1/notify/ack/{token}"): "public: the signed link is the "
    "credential (test_a_forged_or_retargeted_ack_link_acknowledges_nothing)",
}
GAPS: dict[tuple[str, str, str], str] = {}

# Names of server-owned fields, refused in every input model (beyond, per operation, every
# field it answers but does not take).
PROTECTED = frozenset({
    "id", "_id", "number", "requester", "sequence", "version", "status", "priority",
    "approvals", "required_approvals", "approval_status", "risk", "risk_level", "risk_score",
    "sla", "deadline", "breached", "first_response_at", "resolved_at", "closed_at",
    "created_at", "updated_at", "recorded_at", "recorded_by", "acknowledged_by",
    "acknowledged_at", "notified", "timeline", "outbox", "roles", "level",
})  # fmt: skip
# Input members with a protected name, each with the rule that governs it.
ALLOWED: dict[tuple[str, str, str, str], str] = {
    ("incidents", "POST", "/api/v1/incidents", "requester"): "staff and service callers record "
    "on behalf of a user; a requester may not (test_only_staff_record_for_someone_else)",
    **{
        ("sla", "POST", "/api/v1/sla/policies", name): "creates the catalog object of this id"
        for name in ("id",)
    },
    ("sla", "POST", "/api/v1/sla/calendars", "id"): "creates the catalog object of this id",
    ("notify", "POST", "/api/v1/notify/policies", "id"): "creates the catalog object of this id",
    ("notify", "POST", "/api/v1/notify/rotations", "id"): "creates the catalog object of this id",
    **{
        ("sla", method, path, "priority"): "selects the tickets the policy applies to; "
        "managers and admins only"
        for method, path in (
            ("POST", "/api/v1/sla/policies"),
            ("PUT", "/api/v1/sla/policies/{policy_id}"),
        )
    },
}
# External formats: their producers add members across versions, so unknown ones are ignored
# (never stored: only the declared ones are read).
EXTERNAL_FORMATS = {
    "AlertmanagerWebhook": "Prometheus Alertmanager's webhook payload",
    "AlertmanagerAlert": "an alert in Alertmanager's webhook payload",
}


@dataclass
class World:
    name: str
    app: FastAPI
    tokens: Tokens
    ids: Ids
    operations: list[Operation]

    def headers(self, persona: str) -> dict[str, str]:
        return self.tokens.headers(*PEOPLE[persona])

    def path(self, template: str) -> str:
        return template.format(**self.ids)

    async def read(self, snapshot: tuple[str, str]) -> Answer:
        persona, template = snapshot
        answer = await request(self.app, "GET", self.path(template), self.headers(persona))
        assert answer.status == 200, answer.body
        return answer


@pytest.fixture(scope="module")
async def worlds(signing_key: str) -> AsyncIterator[dict[str, World]]:
    """Every service with its seeded world (module-wide: the tests here change nothing, and
    test that they did not)."""
    tokens = Tokens(signing_key)
    async with AsyncExitStack() as stack:
        found = {}
        for name in SERVICES:
            app = build_app(name, signing_key)
            client = await stack.enter_async_context(asgi_client(app))
            ids = await seed(name, app, client, tokens)
            found[name] = World(name, app, tokens, ids, operations(name, app))
        yield found


def by_id(signing_key: str) -> set[tuple[str, str, str]]:
    found = set()
    for name in SERVICES:
        found |= {(name, *op.key) for op in operations(name, build_app(name, signing_key))}
    return {key for key in found if "{" in key[2]}


def test_every_by_id_operation_is_classified(signing_key: str) -> None:
    classified = [*SCOPED, *SHARED, *GAPS]
    assert len(classified) == len(set(classified)), "an operation is classified twice"
    assert sorted(by_id(signing_key) - set(classified)) == [], "unclassified by-id operations"
    assert sorted(set(classified) - by_id(signing_key)) == [], "classified operations are gone"


# Members whose values are an object's content: none may appear in a refusal.
CONTENT = frozenset({
    "title", "number", "description", "requester", "implementer", "email", "ticket_id", "user",
    "notified", "policy_id", "services",
})  # fmt: skip


def strings(value: Any, keys: frozenset[str], inside: bool = False) -> Iterator[str]:
    """The strings in `value` under any of `keys`."""
    if isinstance(value, str) and inside:
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, keys, inside or key in keys)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item, keys, inside)


def filled(value: Any, ids: Ids) -> Any:
    """`value` with each "{name}" string replaced by the id of that name."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return ids[value[1:-1]]
    if isinstance(value, dict):
        return {k: filled(v, ids) for k, v in value.items()}
    return value


def scoped_cases() -> list[Any]:
    return [
        pytest.param(key, intruder, id=f"{key[0]} {key[1]} {key[2]} as {intruder}")
        for key, scoped in SCOPED.items()
        for intruder in scoped.intruders
    ]


@pytest.mark.parametrize(("key", "intruder"), scoped_cases())
async def test_an_object_the_caller_may_not_see_is_not_found_and_unchanged(
    worlds: dict[str, World], key: tuple[str, str, str], intruder: str
) -> None:
    name, method, template = key
    world = worlds[name]
    scoped = SCOPED[key]
    operation = next(op for op in world.operations if op.key == (method, template))
    assert ("requestBody" in operation.spec) == (scoped.body is not None), "give it a body"
    before = await world.read(scoped.snapshot)
    body = filled(scoped.body, world.ids)
    headers = world.headers(intruder)
    if "etag" in before.headers:  # the current version: only visibility may stop the write
        headers["If-Match"] = before.headers["etag"]
    answer = await request(world.app, method, filled_path(operation, world.ids), headers, body)

    assert answer.status == 404, f"{answer.status}: {answer.body[:300]!r}"
    assert answer.content_type == PROBLEM
    addressed = set(world.ids.values())  # a refusal may echo the id it was asked for
    content = [v for v in strings(before.json(), CONTENT) if len(v) >= 3 and v not in addressed]
    assert content, "the snapshot shows no content to look for"
    assert [value for value in content if value in answer.body.decode()] == []
    after = await world.read(scoped.snapshot)
    assert without(after.json(), scoped.moving) == without(before.json(), scoped.moving)


def without(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without(v, keys) for v in value]
    return value


async def test_a_body_cannot_reference_an_incident_the_caller_may_not_see(
    worlds: dict[str, World],
) -> None:
    """The member agent works the seeded incident, but not the other one (another group's):
    naming it as the parent is 404, as if it did not exist."""
    world = worlds["incidents"]
    url = world.path("/api/v1/incidents/{incident_id}/parent")
    body = {"parent_id": world.ids["other_incident"]}
    answer = await request(world.app, "POST", url, world.headers("member"), body)
    assert answer.status == 404 and world.ids["other_incident"] in answer.json()["detail"]
    mine = await world.read(INCIDENT)
    assert mine.json()["parent_id"] is None


async def test_a_forged_or_retargeted_ack_link_acknowledges_nothing(
    worlds: dict[str, World],
) -> None:
    """The public acknowledgement link: its signature is the credential. A link signed with
    another key, or whose payload was changed (another recipient), is refused; the escalation
    stays unacknowledged."""
    world = worlds["notify"]
    escalation = ("admin", "/api/v1/notify/escalations/{escalation_id}")
    token = world.ids["token"]
    version, payload, signature = token.split(".")
    claims = json.loads(_unb64(payload))
    retargeted = f"{version}.{_b64(json.dumps({**claims, 'u': 'otto'}).encode())}.{signature}"
    links = world.app.state.notify_links
    other_key = Links(links.base_url, links.ticket_path, [b"x" * 32], links.ttl)
    forged = other_key.ack(world.ids["escalation_id"], "otto", datetime.now(UTC)).split(ACK_PATH)[1]
    for bad in (retargeted, forged):
        for method in ("GET", "POST"):
            answer = await request(world.app, method, f"/api/v1/notify/ack/{bad}")
            assert answer.status == 403, answer.body
            assert answer.json()["reason"] == "bad_signature"
    assert (await world.read(escalation)).json()["acknowledged_by"] is None


async def test_the_pending_escalations_list_shows_what_paged_the_caller(
    worlds: dict[str, World],
) -> None:
    """A list has no id to probe, but its filter names a person: the pending list shows what
    paged the caller, and someone else's only to managers (403 for anyone else)."""
    world = worlds["notify"]
    url = "/api/v1/notify/escalations/pending"
    escalation = world.ids["escalation_id"]

    async def listed(persona: str, query: str = "") -> list[str]:
        answer = await request(world.app, "GET", url + query, world.headers(persona))
        assert answer.status == 200, answer.body
        return [e["id"] for e in answer.json()["items"]]

    assert await listed("member") == [escalation]  # ann was paged
    assert await listed("outsider") == [] and await listed("outsider", "?paged=me") == []
    named = await request(world.app, "GET", f"{url}?paged=ann", world.headers("outsider"))
    assert named.status == 403 and named.headers["content-type"] == PROBLEM
    assert escalation not in named.body.decode()
    assert await listed("manager", "?paged=ann") == [escalation]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- property level ---------------------------------------------------------------------------


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def object_schemas(document: dict[str, Any], schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every object schema with declared members reachable from `schema`."""
    seen: set[int] = set()
    stack = [schema]
    while stack:
        current = resolve(document, stack.pop())
        if id(current) in seen:
            continue
        seen.add(id(current))
        if "properties" in current:
            yield current
            stack += list(current["properties"].values())
        for key in ("items", "additionalProperties"):
            if isinstance(current.get(key), dict):
                stack.append(current[key])
        for key in ("anyOf", "allOf", "oneOf"):
            stack += current.get(key, [])


def request_schema(document: dict[str, Any], operation: Operation) -> dict[str, Any] | None:
    content = operation.spec.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    return resolve(document, content["application/json"]["schema"])


def answered_fields(document: dict[str, Any], operation: Operation) -> set[str]:
    for status in ("200", "201", "202"):
        content = operation.spec["responses"].get(status, {}).get("content", {})
        if "application/json" in content:
            schema = resolve(document, content["application/json"]["schema"])
            return set(schema.get("properties", {}))
    return set()


def with_bodies(world: World) -> Iterator[tuple[dict[str, Any], Operation, dict[str, Any]]]:
    document = world.app.openapi()
    for operation in world.operations:
        schema = request_schema(document, operation)
        if schema is not None:
            yield document, operation, schema


@pytest.mark.parametrize("name", SERVICES)
async def test_every_input_model_refuses_unknown_members(
    worlds: dict[str, World], name: str
) -> None:
    lax = []
    for document, operation, schema in with_bodies(worlds[name]):
        for model in object_schemas(document, schema):
            if (
                model.get("additionalProperties") is not False
                and model.get("title") not in EXTERNAL_FORMATS
            ):
                lax.append(f"{operation.label}: {model.get('title')}")
    assert lax == []


@pytest.mark.parametrize("name", SERVICES)
async def test_no_input_model_declares_a_server_owned_field(
    worlds: dict[str, World], name: str
) -> None:
    declared = {
        (name, *operation.key, field)
        for _, operation, schema in with_bodies(worlds[name])
        if schema.get("title") not in EXTERNAL_FORMATS
        for field in set(schema.get("properties", {})) & PROTECTED
    }
    assert declared == {key for key in ALLOWED if key[0] == name}


@pytest.mark.parametrize("name", SERVICES)
async def test_server_owned_fields_sent_anyway_are_refused_with_422(
    worlds: dict[str, World], name: str
) -> None:
    world = worlds[name]
    everyone = world.tokens.with_claims(sub="root", roles=["admin", "service"])
    headers = {"Authorization": f"Bearer {everyone}", "If-Match": '"1"'}
    failures, probes = [], 0
    for document, operation, schema in with_bodies(world):
        if schema.get("title") in EXTERNAL_FORMATS:
            continue
        taken = set(schema.get("properties", {}))
        for field in sorted((answered_fields(document, operation) | PROTECTED) - taken):
            probes += 1
            path = filled_path(operation, world.ids)
            answer = await request(world.app, operation.method, path, headers, {field: "x"})
            errors = answer.json().get("errors", []) if answer.status == 422 else []
            refused = {"location": f"body.{field}", "type": "extra_forbidden"}
            if not any(refused.items() <= error.items() for error in errors):
                failures.append(f"{operation.label} {field}: {answer.status}")
    assert failures == []
    assert probes >= len(PROTECTED)


async def test_only_staff_record_for_someone_else(worlds: dict[str, World]) -> None:
    world = worlds["incidents"]
    body = {"title": "on behalf", "requester": "sam"}
    refused = await request(world.app, "POST", "/api/v1/incidents", world.headers("owner"), body)
    assert refused.status == 403 and refused.content_type == PROBLEM
    recorded = await request(world.app, "POST", "/api/v1/incidents", world.headers("member"), body)
    assert recorded.status == 201 and recorded.json()["requester"] == "sam"


async def test_an_external_format_ignores_members_it_does_not_know(
    worlds: dict[str, World],
) -> None:
    """Alertmanager's payload may carry more than the model reads: accepted, and the alert
    taken from it is built from the declared members only."""
    world = worlds["incidents"]
    alert = {
        "status": "firing", "labels": {"alertname": "DiskFull"}, "annotations": {},
        "startsAt": "2026-12-04T08:50:00Z", "requester": "sam", "sequence": 99,
    }  # fmt: skip
    payload = {
        "version": "4", "status": "firing", "receiver": "itsm", "alerts": [alert],
        "groupKey": "{}:{}", "requester": "sam", "status_override": "closed",
    }  # fmt: skip
    machine = world.headers("machine")
    answer = await request(world.app, "POST", "/api/v1/alerts/alertmanager", machine, payload)
    assert answer.status == 202 and answer.json()["accepted"] == 1
    published = decode(world.app.state.incidents_bus.records(Topic.INGEST)[-1])
    assert published.data["alertname"] == "DiskFull"
    assert not {"requester", "sequence", "status_override"} & set(published.data)
