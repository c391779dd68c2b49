"""The audit-log plumbing on a bare service app: what it records for each outcome, what it leaves
out, and that a failing store loses an entry loudly without failing the request."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from shared.auth import CurrentUser, TokenVerifier, mint_dev_token
from shared.http import audit
from shared.http.app import create_service_app
from shared.http.audit import audited
from shared.http.problems import Problem

KEY = "k" * 40
NOW = datetime(2026, 12, 5, 3, 30, tzinfo=UTC)


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.entries: list[dict[str, Any]] = []
        self.fail = fail

    async def insert_one(self, document: dict[str, Any]) -> None:
        if self.fail:
            raise ConnectionError("database away")
        self.entries.append(document)


def app_with(sink: Sink) -> FastAPI:
    app = create_service_app(title="t", service="audit-test")
    router = APIRouter(prefix="/things", dependencies=[audited("things")])

    @router.put("/{thing_id}")
    async def put(thing_id: str, user: CurrentUser) -> dict[str, str]:
        if thing_id == "refused":
            raise Problem(409, "Conflict", "no")
        if thing_id == "broken":
            raise RuntimeError("bug")
        return {"id": thing_id}

    @router.get("/{thing_id}")
    async def get(thing_id: str, user: CurrentUser) -> dict[str, str]:
        return {"id": thing_id}

    app.include_router(router)
    app.state.token_verifier = TokenVerifier(issuer="i", audience="a", dev_signing_key=KEY)
    app.state.audit_log = sink
    app.state.clock = lambda: NOW
    return app


def bearer(subject: str) -> dict[str, str]:
    token = mint_dev_token(KEY, subject=subject, roles=["admin"], issuer="i", audience="a")
    return {"Authorization": f"Bearer {token}"}


async def send(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("192.0.2.4", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, path, **kwargs)


@pytest.mark.parametrize(
    ("thing", "status", "outcome"),
    [("a1", 200, "done"), ("refused", 409, "refused"), ("broken", 500, "failed")],
)
async def test_each_outcome_is_recorded(thing: str, status: int, outcome: str) -> None:
    sink = Sink()
    answer = await send(app_with(sink), "PUT", f"/things/{thing}", headers=bearer("maria"))
    assert answer.status_code == status
    [entry] = sink.entries
    assert entry["status"] == status and entry["outcome"] == outcome
    assert (entry["actor"], entry["at"], entry["source_address"]) == ("maria", NOW, "192.0.2.4")
    assert (entry["route"], entry["target"]) == ("/things/{thing_id}", {"thing_id": thing})
    assert entry["roles"] == ["admin"] and entry["service"] == "audit-test"


async def test_reads_and_anonymous_requests_are_not_recorded() -> None:
    sink = Sink()
    app = app_with(sink)
    assert (await send(app, "GET", "/things/a1", headers=bearer("maria"))).status_code == 200
    assert (await send(app, "PUT", "/things/a1")).status_code == 401
    assert sink.entries == []


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def exception(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


async def test_a_failing_store_loses_the_entry_loudly_not_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = Log()
    monkeypatch.setattr(audit, "log", log)
    answer = await send(app_with(Sink(fail=True)), "PUT", "/things/a1", headers=bearer("maria"))
    assert answer.status_code == 200
    assert log.events == [("audit.write_failed", {"area": "things", "route": "/things/{thing_id}"})]
