"""Resource limits on every operation, generated from the OpenAPI documents of the four APIs:

- page-size caps: every operation taking a `limit` declares a maximum of at most 100, answers a
  limit one above it with 422 problem+json naming `limit`, and takes the maximum itself;
- request body size: every operation taking a body refuses one a byte over the limit (1 MiB by
  default, `ITSM_MAX_BODY_BYTES`) with 413 problem+json, whoever sends it, before any handler
  or validation runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI

from shared.settings import ServiceSettings
from tests.security.services import (
    Operation,
    admin,
    filled_path,
    operations,
    request,
    running_apps,
)

PAGE_CAP = 100
BODY_LIMIT = ServiceSettings.model_fields["max_body_bytes"].default


@pytest.fixture(scope="module")
async def apps(signing_key: str) -> AsyncIterator[dict[str, FastAPI]]:
    async with running_apps(signing_key) as running:
        yield running


def paged(app: FastAPI, service: str) -> list[tuple[Operation, dict[str, Any]]]:
    found = []
    for operation in operations(service, app):
        for parameter in operation.spec.get("parameters", []):
            if parameter["in"] == "query" and parameter["name"] == "limit":
                found.append((operation, parameter["schema"]))
    return found


def required_query(operation: Operation) -> str:
    """Values for the operation's other required query parameters (none today; kept honest)."""
    parts = []
    for parameter in operation.spec.get("parameters", []):
        if parameter["in"] == "query" and parameter.get("required"):
            parts.append(f"{parameter['name']}=x")
    return "&".join(parts)


async def test_every_paged_operation_caps_its_page_size(
    apps: dict[str, FastAPI], signing_key: str
) -> None:
    checked = []
    for service, app in apps.items():
        for operation, schema in paged(app, service):
            cap = schema.get("maximum")
            assert cap is not None and cap <= PAGE_CAP, f"{operation.label}: limit has no cap"
            base = filled_path(operation)
            extra = required_query(operation)
            query = f"&{extra}" if extra else ""
            over = await request(
                app, "GET", f"{base}?limit={cap + 1}{query}", headers=admin(signing_key)
            )
            assert over.status == 422, (operation.label, over.status, over.body[:300])
            assert over.content_type == "application/problem+json"
            assert "limit" in over.body.decode(), over.body[:300]
            at_cap = await request(
                app, "GET", f"{base}?limit={cap}{query}", headers=admin(signing_key)
            )
            assert at_cap.status != 422 or "limit" not in at_cap.body.decode(), operation.label
            checked.append(operation.label)
    # every list of the platform: incidents, changes, SLA timers/KPIs, notify's records
    print(f"\n{len(checked)} paged operations checked")
    assert len(checked) >= 10, checked


async def test_every_body_over_the_limit_is_refused_with_413_before_it_is_read_whole(
    apps: dict[str, FastAPI], signing_key: str
) -> None:
    oversized = {"padding": "a" * BODY_LIMIT}
    checked = []
    for service, app in apps.items():
        for operation in operations(service, app):
            if "requestBody" not in operation.spec:
                continue
            answer = await request(
                app,
                operation.method,
                filled_path(operation),
                headers=admin(signing_key),
                body=oversized,
            )
            assert answer.status == 413, (operation.label, answer.status, answer.body[:200])
            assert answer.content_type == "application/problem+json"
            assert f"exceeds {BODY_LIMIT} bytes" in answer.json()["detail"]
            checked.append(operation.label)
    print(f"\n{len(checked)} operations with a body checked")
    assert len(checked) >= 40, checked
