"""Authentication and role checks on every operation of every service, generated from the
services' own OpenAPI documents (issue #9, "authorization everywhere").

For each operation but the infrastructure routes and the listed public ones:

- 401 problem+json with `WWW-Authenticate: Bearer` for a missing token and for every kind of bad
  one (expired, signed with another key, another issuer or audience, `alg: none`, no expiry,
  not a JWT, not a bearer token), each of which would otherwise be an admin's;
- the roles the route admits, read from the `require_roles(...)` checks in its dependency tree,
  equal the EXPECTED table below (so loosening or tightening a route fails here until the table
  says so), and the OpenAPI document says 401 and 403;
- a token of any role outside that set, of no role, or of an unknown role gets 403 problem+json,
  and one of a role inside it is let through (neither 401 nor 403).

Operations with no authentication at all must be exactly PUBLIC, each with its reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from fastapi import FastAPI

from shared.auth.principal import Role
from tests.security.services import (
    ROLES,
    SERVICES,
    Operation,
    Tokens,
    build_app,
    declared_roles,
    filled_path,
    operations,
    request,
)
from tests.support.apps import asgi_client

R, A, C, M, X, S = (
    Role.REQUESTER, Role.AGENT, Role.CHANGE_MANAGER, Role.MANAGER, Role.ADMIN, Role.SERVICE,
)  # fmt: skip
PEOPLE = frozenset({R, A, C, M, X})  # every human role
STAFF = frozenset({A, C, M, X})  # the humans who work tickets
READERS = frozenset({A, M, X})  # SLA figures and KPIs
MANAGING = frozenset({M, X})

# Intentionally public operations (no bearer token), with the reason.
PUBLIC: dict[tuple[str, str, str], str] = {
    ("notify", "GET", "/api/v1/notify/ack/{token}"): "the signed, expiring, single-use "
    "acknowledgement link in a message is the credential; the page acknowledges nothing",
    ("notify", "POST", "/api/v1/notify/ack/{token}"): "the signed, expiring, single-use "
    "acknowledgement link is the credential (its recipient may have no token at hand)",
}

# Each is let in by role here, then checked against the object (404 or 403) by its handler.
INCIDENT_ACTIONS = (
    "classification", "assignment", "escalation", "manager-escalation", "start", "hold",
    "resume", "replies", "work-notes", "watchers", "major", "parent", "resolve", "close",
    "reopen", "cancel", "rating",
)  # fmt: skip
CHANGE_ACTIONS = (
    "submit", "assessment", "approvals", "delegations", "start", "complete", "review", "close",
    "cancel", "decline",
)  # fmt: skip

# Who may call what, per service: the roles each route admits. Finer, per-object rules (a
# requester resolves nothing; an agent works only their groups' incidents) are checked in the
# handlers: see test_object_level.py and the services' own API tests.
EXPECTED: dict[str, dict[tuple[str, str], frozenset[Role]]] = {
    "incidents": {
        ("GET", "/api/v1/audit/incidents"): frozenset({X}),  # the audit log
        ("POST", "/api/v1/incidents"): PEOPLE | {S},  # monitoring records on behalf of users
        ("GET", "/api/v1/incidents"): PEOPLE,
        ("GET", "/api/v1/incidents/{incident_id}"): PEOPLE,
        ("PATCH", "/api/v1/incidents/{incident_id}"): PEOPLE,
        ("GET", "/api/v1/incidents/{incident_id}/timeline"): PEOPLE,
        **{("POST", f"/api/v1/incidents/{{incident_id}}/{a}"): PEOPLE for a in INCIDENT_ACTIONS},
        ("POST", "/api/v1/groups"): MANAGING,
        ("GET", "/api/v1/groups"): PEOPLE,
        ("GET", "/api/v1/groups/{name}"): PEOPLE,
        ("PUT", "/api/v1/groups/{name}/members"): MANAGING,
        ("POST", "/api/v1/alerts/alertmanager"): frozenset({S}),
    },
    "changes": {
        ("GET", "/api/v1/audit/changes"): frozenset({X}),  # the audit log
        ("POST", "/api/v1/changes"): PEOPLE,
        ("GET", "/api/v1/changes"): PEOPLE,
        ("GET", "/api/v1/changes/calendar"): PEOPLE,
        ("GET", "/api/v1/changes/{change_id}"): PEOPLE,
        ("PATCH", "/api/v1/changes/{change_id}"): PEOPLE,
        ("GET", "/api/v1/changes/{change_id}/risk"): PEOPLE,
        ("GET", "/api/v1/changes/{change_id}/timeline"): PEOPLE,
        **{("POST", f"/api/v1/changes/{{change_id}}/{a}"): PEOPLE for a in CHANGE_ACTIONS},
        ("GET", "/api/v1/change-templates"): PEOPLE,
        ("POST", "/api/v1/change-templates"): frozenset({C, X}),
        ("GET", "/api/v1/configuration-items"): PEOPLE,
        ("POST", "/api/v1/configuration-items"): frozenset({C, X}),
        ("POST", "/api/v1/freeze-windows"): frozenset({C, X}),
        ("POST", "/api/v1/maintenance-windows"): frozenset({C, X}),
        ("PUT", "/api/v1/approval-groups/{name}"): frozenset({C, X}),
    },
    "sla": {
        ("GET", "/api/v1/audit/sla"): frozenset({X}),  # the audit log
        ("GET", "/api/v1/sla/tickets/{ticket_id}"): READERS,
        ("GET", "/api/v1/sla/at-risk"): READERS,
        ("GET", "/api/v1/sla/breached"): READERS,
        ("GET", "/api/v1/kpis"): READERS,
        ("GET", "/api/v1/sla/stream"): READERS,
        ("GET", "/api/v1/kpis/stream"): READERS,
        ("POST", "/api/v1/sla/calendars"): MANAGING,
        ("GET", "/api/v1/sla/calendars"): STAFF,
        ("GET", "/api/v1/sla/calendars/{calendar_id}"): STAFF,
        ("PUT", "/api/v1/sla/calendars/{calendar_id}"): MANAGING,
        ("DELETE", "/api/v1/sla/calendars/{calendar_id}"): MANAGING,
        ("GET", "/api/v1/sla/calendars/{calendar_id}/versions"): STAFF,
        ("POST", "/api/v1/sla/policies"): MANAGING,
        ("GET", "/api/v1/sla/policies"): STAFF,
        ("GET", "/api/v1/sla/policies/{policy_id}"): STAFF,
        ("PUT", "/api/v1/sla/policies/{policy_id}"): MANAGING,
        ("DELETE", "/api/v1/sla/policies/{policy_id}"): MANAGING,
        ("GET", "/api/v1/sla/policies/{policy_id}/versions"): STAFF,
    },
    "notify": {
        ("GET", "/api/v1/audit/notify"): frozenset({X}),  # the audit log
        ("POST", "/api/v1/notify/policies"): MANAGING,
        ("GET", "/api/v1/notify/policies"): STAFF,
        ("GET", "/api/v1/notify/policies/{policy_id}"): STAFF,
        ("PUT", "/api/v1/notify/policies/{policy_id}"): MANAGING,
        ("DELETE", "/api/v1/notify/policies/{policy_id}"): MANAGING,
        ("GET", "/api/v1/notify/policies/{policy_id}/versions/{version}"): STAFF,
        ("POST", "/api/v1/notify/rotations"): MANAGING,
        ("GET", "/api/v1/notify/rotations"): STAFF,
        ("GET", "/api/v1/notify/rotations/{rotation_id}"): STAFF,
        ("PUT", "/api/v1/notify/rotations/{rotation_id}"): MANAGING,
        ("POST", "/api/v1/notify/rotations/{rotation_id}/overrides"): MANAGING,
        ("GET", "/api/v1/notify/rotations/{rotation_id}/on-call"): STAFF,
        ("PUT", "/api/v1/notify/people/{user_id}"): STAFF,  # their own entry, or managing
        ("GET", "/api/v1/notify/people/{user_id}"): STAFF,  # their own entry, or managing
        ("GET", "/api/v1/notify/people"): MANAGING,
        ("PUT", "/api/v1/notify/groups/{name}"): MANAGING,
        ("GET", "/api/v1/notify/groups/{name}"): STAFF,
        ("GET", "/api/v1/notify/groups"): STAFF,
        ("GET", "/api/v1/notify/subscriptions/mine"): STAFF,
        ("PUT", "/api/v1/notify/subscriptions/mine/{kind}"): STAFF,
        ("DELETE", "/api/v1/notify/subscriptions/mine/{kind}"): STAFF,
        ("GET", "/api/v1/notify/escalations"): STAFF,
        ("GET", "/api/v1/notify/escalations/pending"): STAFF,  # theirs; managers anyone's
        ("GET", "/api/v1/notify/escalations/{escalation_id}"): STAFF,
        ("POST", "/api/v1/notify/escalations/{escalation_id}/acknowledgement"): STAFF,
        ("GET", "/api/v1/notify/deliveries"): STAFF,
    },
}
# Every operation of the four APIs (infrastructure routes aside), public ones included.
OPERATIONS = 101
UNKNOWN_ROLE = "superuser"  # not a role of the platform: must grant nothing


class Service:
    def __init__(self, name: str, app: FastAPI, tokens: Tokens) -> None:
        self.name = name
        self.app = app
        self.tokens = tokens
        self.operations = operations(name, app)

    def protected(self) -> list[Operation]:
        return [op for op in self.operations if (self.name, *op.key) not in PUBLIC]

    async def call(self, operation: Operation, headers: dict[str, str]) -> Any:
        body = {} if "requestBody" in operation.spec else None
        return await request(
            self.app, operation.method, filled_path(operation), headers=headers, body=body
        )


@pytest.fixture(scope="module")
async def services(signing_key: str) -> AsyncIterator[dict[str, Service]]:
    """Every service app, its lifespan running, on its own in-memory adapters."""
    tokens = Tokens(signing_key)
    async with AsyncExitStack() as stack:
        running = {}
        for name in SERVICES:
            app = build_app(name, signing_key)
            await stack.enter_async_context(asgi_client(app))
            running[name] = Service(name, app, tokens)
        yield running


def test_every_operation_is_in_the_expected_table_or_public(signing_key: str) -> None:
    found: set[tuple[str, str, str]] = set()
    for name in SERVICES:
        app = build_app(name, signing_key)
        found |= {(name, *op.key) for op in operations(name, app)}
    expected = {(name, *key) for name, table in EXPECTED.items() for key in table} | set(PUBLIC)
    assert sorted(found - expected) == [], "operations missing from EXPECTED or PUBLIC"
    assert sorted(expected - found) == [], "EXPECTED or PUBLIC names operations that are gone"
    assert len(found) == OPERATIONS  # the figure in docs/security.md


@pytest.mark.parametrize("name", SERVICES)
async def test_only_the_listed_operations_are_public(
    services: dict[str, Service], name: str
) -> None:
    service = services[name]
    unauthenticated = {
        (name, *op.key) for op in service.operations if declared_roles(service.app, op) is None
    }
    undocumented = {(name, *op.key) for op in service.operations if not op.spec.get("security")}
    listed = {key for key in PUBLIC if key[0] == name}
    assert unauthenticated == listed
    assert undocumented == listed  # the OpenAPI document says which need a bearer token


@pytest.mark.parametrize("name", SERVICES)
async def test_every_operation_refuses_a_missing_or_bad_token_with_401(
    services: dict[str, Service], name: str
) -> None:
    service = services[name]
    failures: list[str] = []
    probes = 0
    for operation in service.protected():
        for kind, headers in service.tokens.invalid().items():
            probes += 1
            answer = await service.call(operation, headers)
            problem = answer.json() if answer.content_type == "application/problem+json" else {}
            challenge = answer.headers.get("www-authenticate", "")
            if not (answer.status == 401 and problem.get("status") == 401):
                failures.append(
                    f"{operation.label} [{kind}]: {answer.status} {answer.body[:200]!r}"
                )
            elif not challenge.startswith("Bearer"):
                failures.append(f"{operation.label} [{kind}]: WWW-Authenticate {challenge!r}")
    assert failures == []
    assert probes == len(service.protected()) * len(service.tokens.invalid())


@pytest.mark.parametrize("name", SERVICES)
async def test_the_roles_each_route_admits_are_the_expected_ones(
    services: dict[str, Service], name: str
) -> None:
    service = services[name]
    declared = {op.key: declared_roles(service.app, op) for op in service.protected()}
    mismatches = {
        key: (sorted(declared[key] or ()), sorted(roles))
        for key, roles in EXPECTED[name].items()
        if declared.get(key) != roles
    }
    assert mismatches == {}, "route (declared, expected)"
    for operation in service.protected():
        documented = set(operation.spec["responses"])
        assert {"401", "403"} <= documented, f"{operation.label} documents {sorted(documented)}"


@pytest.mark.parametrize("name", SERVICES)
async def test_roles_outside_the_declared_set_get_403_and_inside_it_get_through(
    services: dict[str, Service], name: str
) -> None:
    service = services[name]
    failures: list[str] = []
    for operation in service.protected():
        admitted = declared_roles(service.app, operation)
        assert admitted, f"{operation.label} authenticates but admits no role"
        callers: list[tuple[str, tuple[str, ...], bool]] = [
            (role.value, (role.value,), role in admitted) for role in ROLES
        ]
        callers += [("no role", (), False), (UNKNOWN_ROLE, (UNKNOWN_ROLE,), False)]
        for label, roles, allowed in callers:
            token = service.tokens.with_claims(sub=f"probe-{label}", roles=list(roles))
            answer = await service.call(operation, {"Authorization": f"Bearer {token}"})
            if allowed and answer.status in (401, 403):
                failures.append(f"{operation.label} [{label}] refused: {answer.body[:200]!r}")
            if not allowed and not (
                answer.status == 403 and answer.content_type == "application/problem+json"
            ):
                failures.append(f"{operation.label} [{label}]: {answer.status}, not 403")
    assert failures == []
