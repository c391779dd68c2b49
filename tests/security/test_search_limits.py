"""Bounded search: no query a client sends can make the database (or the in-memory twin) run a
pathological pattern, generated from the OpenAPI documents of the four APIs:

- every free-text query parameter (a string that is not an enum, a date-time or a duration)
  declares a maximum length of at most 200; one character over it, and a 10 kB value, are refused
  with 422 problem+json naming the parameter, before any handler runs;
- every text search (`q`) matches the title literally and case-insensitively: regex metacharacters
  in it are characters, so `(a+)+$` finds the title containing those six characters and not the
  title of thirty `a`s that would make a backtracking engine run for hours; `.*` matches nothing
  but a literal `.*`;
- in the source, every `$regex` the services build is `re.escape`d user text, and no `$where`,
  `$function`, `$accumulator` or `$text` operator is built at all (`shared/store/memory.py`, the
  in-memory twin that interprets `$regex`, is the one exception).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI

from tests.security.services import (
    Operation,
    admin,
    filled_path,
    operations,
    request,
    running_apps,
)

ROOT = Path(__file__).resolve().parents[2]
TEXT_CAP = 200  # the longest free-text query parameter any list may declare
HUGE = "a" * 10_240  # a 10 kB search string
# A title a backtracking engine would take hours to reject for the pattern `(a+)+$`.
EVIL_TITLE = "a" * 34 + "!"
TEXT_SEARCH = "q"


@pytest.fixture(scope="module")
async def apps(signing_key: str) -> AsyncIterator[dict[str, FastAPI]]:
    async with running_apps(signing_key) as running:
        yield running


def _string_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The string branch of a parameter's schema (`str | None` is an anyOf), if it has one."""
    for branch in [schema, *schema.get("anyOf", [])]:
        if branch.get("type") == "string":
            return branch
    return None


def free_text(operation: Operation) -> list[tuple[str, dict[str, Any]]]:
    """The operation's query parameters a client fills with any text it likes."""
    found = []
    for parameter in operation.spec.get("parameters", []):
        if parameter["in"] != "query":
            continue
        branch = _string_schema(parameter.get("schema", {}))
        if branch is None or "enum" in branch or "format" in branch:
            continue
        found.append((parameter["name"], branch))
    return found


def other_required(operation: Operation, name: str) -> dict[str, str]:
    """Valid values for the operation's other required query parameters."""
    values = {}
    for parameter in operation.spec.get("parameters", []):
        if parameter["in"] != "query" or not parameter.get("required"):
            continue
        if parameter["name"] == name:
            continue
        branch = _string_schema(parameter.get("schema", {})) or {}
        if branch.get("format") == "date-time":
            values[parameter["name"]] = "2026-01-05T00:00:00Z"
        elif "enum" in branch:
            values[parameter["name"]] = str(branch["enum"][0])
        else:
            values[parameter["name"]] = "x"
    return values


async def test_every_free_text_query_parameter_is_capped_and_refused_over_the_cap(
    apps: dict[str, FastAPI], signing_key: str
) -> None:
    checked = []
    for service, app in apps.items():
        for operation in operations(service, app):
            for name, schema in free_text(operation):
                cap = schema.get("maxLength")
                label = f"{operation.label} ?{name}"
                assert cap is not None and cap <= TEXT_CAP, f"{label}: no length cap"
                for value in ("x" * (cap + 1), HUGE):
                    query = urlencode({**other_required(operation, name), name: value})
                    answer = await request(
                        app,
                        operation.method,
                        f"{filled_path(operation)}?{query}",
                        headers=admin(signing_key),
                    )
                    assert answer.status == 422, (label, len(value), answer.status)
                    assert answer.content_type == "application/problem+json", label
                    problem = answer.json()
                    assert f"query.{name}" in problem["detail"], (label, problem)
                    assert f"at most {cap} characters" in problem["detail"], (label, problem)
                    assert {e["location"] for e in problem["errors"]} == {f"query.{name}"}
                checked.append(label)
    print(f"\n{len(checked)} free-text query parameters checked")
    # incidents and changes (filters, text search), SLA (KPI dims, policy filters, streams),
    # notify (ticket ids, the paged person)
    assert len(checked) >= 20, checked
    assert {"incidents GET /api/v1/incidents ?q", "changes GET /api/v1/changes ?q"} <= set(checked)


# Each searchable list: how to create a record with a given title through the API.
async def _create_incident(app: FastAPI, headers: dict[str, str], title: str) -> None:
    body = {"title": title, "impact": 3}
    answer = await request(app, "POST", "/api/v1/incidents", headers=headers, body=body)
    assert answer.status == 201, answer.body[:300]


async def _create_change(app: FastAPI, headers: dict[str, str], title: str) -> None:
    item = {"name": "search-ci"}
    known = await request(app, "POST", "/api/v1/configuration-items", headers=headers, body=item)
    assert known.status in (201, 409), known.body[:300]
    body = {
        "title": title,
        "change_type": "normal",
        "configuration_items": ["search-ci"],
        "plan": {"implementation": "do", "backout": "undo", "test": "check"},
    }
    answer = await request(app, "POST", "/api/v1/changes", headers=headers, body=body)
    assert answer.status == 201, answer.body[:300]


CREATORS = {
    ("incidents", "/api/v1/incidents"): _create_incident,
    ("changes", "/api/v1/changes"): _create_change,
}
TITLES = (
    "Disk full: pattern (a+)+$ in the log",
    "Proxy answers .*.*.*.*x for every host",
    EVIL_TITLE,
    "AAAA printer",
)


def searchable(apps: dict[str, FastAPI]) -> list[tuple[FastAPI, Operation]]:
    return [
        (app, operation)
        for service, app in apps.items()
        for operation in operations(service, app)
        if operation.method == "GET" and any(n == TEXT_SEARCH for n, _ in free_text(operation))
    ]


async def search(
    app: FastAPI, operation: Operation, headers: dict[str, str], text: str
) -> list[str]:
    query = urlencode({TEXT_SEARCH: text, "limit": 100})
    answer = await request(app, "GET", f"{operation.path}?{query}", headers=headers)
    assert answer.status == 200, (operation.label, text, answer.body[:300])
    return sorted(item["title"] for item in answer.json()["items"])


async def test_every_text_search_matches_its_text_literally(
    apps: dict[str, FastAPI], signing_key: str
) -> None:
    found = searchable(apps)
    # Every text search the APIs offer has a way to seed it here.
    assert {(o.service, o.path) for _, o in found} == set(CREATORS), found
    headers = admin(signing_key)
    for app, operation in found:
        for title in TITLES:
            await CREATORS[(operation.service, operation.path)](app, headers, title)
        label = operation.label
        # Wildcards and classes are characters: nothing matches everything.
        assert await search(app, operation, headers, ".*") == [TITLES[1]], label
        assert await search(app, operation, headers, ".*.*.*.*x") == [TITLES[1]], label
        # A catastrophic-backtracking pattern: the title with those characters, not the `a`s
        # (run as a pattern, it would not return before the test's timeout).
        assert await search(app, operation, headers, "(a+)+$") == [TITLES[0]], label
        assert await search(app, operation, headers, "^a") == [], label
        assert await search(app, operation, headers, "[a-z]+") == [], label
        assert await search(app, operation, headers, "a|x") == [], label
        assert await search(app, operation, headers, "\\") == [], label
        # Still a search: case-insensitive, anywhere in the title.
        assert await search(app, operation, headers, "aaaa") == sorted([EVIL_TITLE, TITLES[3]])
        # The 10 kB search string: refused naming the parameter, not run.
        answer = await request(
            app, "GET", f"{operation.path}?{urlencode({TEXT_SEARCH: HUGE})}", headers=headers
        )
        assert answer.status == 422, label
        assert answer.content_type == "application/problem+json"
        assert f"query.{TEXT_SEARCH}" in answer.json()["detail"], answer.json()


@pytest.mark.infra
async def test_the_title_filters_match_literally_on_the_real_server() -> None:
    """The same filters the stores build, run by the MongoDB-compatible server itself (its regex
    engine, not Python's): the escaped text is a literal there too."""
    from services.changes.store import ChangeFilter
    from services.incidents.store import IncidentFilter
    from tests.integration.conftest import scratch_database

    url = os.environ.get("ITSM_MONGO_URL", "mongodb://127.0.0.1:27017")
    async with scratch_database(url) as database:
        collection = database["titles"]
        await collection.insert_many([{"title": title} for title in TITLES])
        for build in (lambda text: IncidentFilter(text=text), lambda text: ChangeFilter(text=text)):

            async def titles(text: str, build: Any = build) -> list[str]:
                found = collection.find(build(text).query(), {"_id": 0, "title": 1})
                return sorted([document["title"] async for document in found])

            assert await titles(".*") == [TITLES[1]]
            assert await titles("[a-z]+") == []
            assert await titles("a|x") == []
            assert await titles("\\") == []
            assert await titles("(a+)+$") == [TITLES[0]]
            assert await titles("AAAA") == sorted([EVIL_TITLE, TITLES[3]])


# The in-memory twin interprets whatever `$regex` it is handed: it is the one place that may.
INTERPRETERS = {Path("shared/store/memory.py")}
FORBIDDEN_OPERATORS = ("$where", "$function", "$accumulator", "$text")


def test_every_regex_the_services_build_escapes_the_users_text() -> None:
    regexes = []
    for path in sorted([*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")]):
        relative = path.relative_to(ROOT)
        if relative in INTERPRETERS:
            continue
        source = path.read_text()
        for operator in FORBIDDEN_OPERATORS:
            assert f'"{operator}"' not in source and f"'{operator}'" not in source, (
                f"{relative}: builds {operator}"
            )
        for line_number, line in enumerate(source.splitlines(), 1):
            if "$regex" in line:
                where = f"{relative}:{line_number}"
                assert re.search(r'"\$regex":\s*re\.escape\(', line), f"{where}: {line.strip()}"
                regexes.append(where)
    # incidents' and changes' title search
    assert len(regexes) >= 2, regexes
