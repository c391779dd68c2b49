"""Hostile input the fuzzer rarely generates, sent on purpose to every operation it applies to:
instants at the ends of the calendar or without an offset, nulls in partial updates, and an
on-call override spanning centuries. The bar: no 5xx, a documented status, nothing corrupted,
and bounded work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, time
from typing import Any
from urllib.parse import quote

import pytest

from services.notify.domain import rotations
from services.notify.domain.rotations import Override, Rotation, on_call
from tests.security.services import SERVICES, Tokens, build_app, filled_path, operations, request
from tests.security.world import PEOPLE, seed
from tests.support.apps import asgi_client

INSTANTS = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-23:59",
    "2026-03-02T09:00:00",  # no offset
    "2026-03-02",  # a date where an instant is expected
]


@pytest.fixture(scope="module")
async def worlds(signing_key: str) -> AsyncIterator[dict[str, Any]]:
    tokens = Tokens(signing_key)
    async with AsyncExitStack() as stack:
        found = {}
        for name in SERVICES:
            app = build_app(name, signing_key)
            client = await stack.enter_async_context(asgi_client(app))
            found[name] = (app, tokens, await seed(name, app, client, tokens))
        yield found


def date_parameters(operation: Any) -> list[str]:
    names = []
    for parameter in operation.spec.get("parameters", []):
        schema = parameter.get("schema", {})
        formats = {schema.get("format")} | {s.get("format") for s in schema.get("anyOf", [])}
        if parameter["in"] == "query" and formats & {"date-time", "date"}:
            names.append(parameter["name"])
    return names


@pytest.mark.parametrize("name", SERVICES)
async def test_instants_at_the_ends_of_the_calendar_or_without_offset_are_no_server_error(
    worlds: dict[str, Any], name: str
) -> None:
    app, tokens, ids = worlds[name]
    admin = tokens.headers(*PEOPLE["admin"])
    failures, probes = [], 0
    for operation in operations(name, app):
        if operation.path.endswith("/stream"):
            continue  # their filters take no instants
        for parameter in date_parameters(operation):
            for value in INSTANTS:
                probes += 1
                url = f"{filled_path(operation, ids)}?{parameter}={quote(value)}"
                answer = await request(app, operation.method, url, admin)
                documented = set(operation.spec["responses"])
                if answer.status >= 500 or str(answer.status) not in documented:
                    failures.append(f"{operation.label} {parameter}={value}: {answer.status}")
    assert failures == []
    if name != "changes":  # the changes API takes instants in bodies only
        assert probes > 0


def accepts_null(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf", [schema])
    return any(option.get("type") == "null" for option in options)


@pytest.mark.parametrize("name", ["incidents", "changes"])
async def test_a_null_in_a_partial_update_is_refused_or_clears_and_never_corrupts(
    worlds: dict[str, Any], name: str
) -> None:
    """PATCH leaves out what it keeps; null clears a field that may be empty and is refused
    (422) for one that may not. Either way the object stays readable."""
    app, tokens, ids = worlds[name]
    admin = tokens.headers(*PEOPLE["admin"])
    document = app.openapi()
    patches = [op for op in operations(name, app) if op.method == "PATCH"]
    assert patches
    for operation in patches:
        ref = operation.spec["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
        url = filled_path(operation, ids)
        for field, field_schema in schema["properties"].items():
            current = await request(app, "GET", url, admin)
            assert current.status == 200, current.body
            headers = {**admin, "If-Match": current.headers["etag"]}
            answer = await request(app, "PATCH", url, headers, {field: None})
            expected = 200 if accepts_null(field_schema) else 422
            assert answer.status == expected, f"{field}: {answer.status} {answer.body[:200]!r}"
            assert (await request(app, "GET", url, admin)).status == 200


def test_an_override_spanning_centuries_is_answered_with_bounded_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Who is on call under a 6,000-year override, and until when: once walked a week at a
    time (300,000 handoffs, seconds per request); now a few handoffs either side of it."""
    rotation = Rotation(
        id="ops", name="Ops", zone="Europe/Berlin", participants=("ann", "otto"),
        handoff_weekday=0, handoff_time=time(9), starts=datetime(2026, 3, 2).date(),
        overrides=(
            Override("cover", datetime(1458, 4, 1, tzinfo=UTC), datetime(8016, 9, 2, tzinfo=UTC)),
        ),
    )  # fmt: skip
    computed = 0
    handoff = Rotation.handoff

    def counted(self: Rotation, shift: int) -> datetime:
        nonlocal computed
        computed += 1
        return handoff(self, shift)

    monkeypatch.setattr(rotations.Rotation, "handoff", counted)
    now = datetime(2026, 5, 1, tzinfo=UTC)
    answer = on_call(rotation, now)
    assert (answer.user, answer.until) == ("cover", datetime(8016, 9, 2, tzinfo=UTC))
    assert computed < 50
    after = on_call(rotation, datetime(8016, 9, 2, tzinfo=UTC))  # the schedule takes over
    assert after.override is None and after.user in {"ann", "otto"}
    assert after.until is not None and after.until > datetime(8016, 9, 2, tzinfo=UTC)
