"""The embedded platform: every landed service in one process on the in-memory adapters."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from launcher.embedded import EmbeddedSettings, create_embedded_app, ensure_dev_key
from shared.settings import ServiceSettings
from tests.support.apps import asgi_client
from tests.support.polling import eventually


async def test_embedded_platform_serves_every_service_with_docs(
    settings: ServiceSettings, auth
) -> None:
    async with asgi_client(create_embedded_app(settings)) as client:
        spec = (await client.get("/openapi.json")).json()
        assert "/api/v1/incidents" in spec["paths"]
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        created = await client.post(
            "/api/v1/incidents", json={"title": "Wi-Fi down"}, headers=auth("al", "requester")
        )
        assert created.status_code == 201
        fetched = await client.get(created.headers["location"], headers=auth("al", "requester"))
        assert fetched.json()["title"] == "Wi-Fi down"


async def l1_member(client: httpx.AsyncClient, agent: str, admin: dict[str, str]) -> None:
    """`agent` joins an L1 group: the SLA API learns it from the incident events, and then shows
    them the unassigned tickets' SLA."""
    group = {"name": "service-desk", "tier": "L1", "members": [agent]}
    answer = await client.post("/api/v1/groups", json=group, headers=admin)
    assert answer.status_code == 201, answer.text


async def test_embedded_sla_processor_times_a_new_incident_and_the_sla_api_serves_it(
    settings: ServiceSettings, auth
) -> None:
    """One process: the incidents API's outbox, the in-memory bus, the SLA processor's handlers
    on an asyncio tick, and the SLA read API's materialisation. The SLA API learns the L1 group
    from the incidents service's events: its member sees the unassigned ticket's SLA, an agent
    of no group does not."""
    async with asgi_client(create_embedded_app(settings)) as client:
        await l1_member(client, "an", auth("ada", "admin"))
        created = await client.post(
            "/api/v1/incidents",
            json={"title": "VPN down", "impact": 1, "urgency": 1},
            headers=auth("al", "requester"),
        )
        assert created.status_code == 201, created.text
        ticket = created.json()["id"]

        async def timers() -> list[str]:
            answer = await client.get(f"/api/v1/sla/tickets/{ticket}", headers=auth("an", "agent"))
            return sorted(t["metric"] for t in answer.json().get("timers", []))

        metrics = await eventually(timers, until=lambda m: len(m) == 2, what="both SLA timers")
        assert metrics == ["first_response", "resolution"]
        outsider = await client.get(f"/api/v1/sla/tickets/{ticket}", headers=auth("oz", "agent"))
        assert outsider.status_code == 404, outsider.text


async def test_embedded_policy_change_reaches_the_processor_and_kpis_reach_the_kpi_api(
    settings: ServiceSettings, auth
) -> None:
    """A calendar and a P2 policy created through the SLA API go out through its outbox to the
    in-memory policies topic; the embedded processor measures the next P2 incident with them,
    and its KPI snapshots are materialised for the KPI API."""
    admin, agent = auth("ada", "admin"), auth("an", "agent")
    async with asgi_client(create_embedded_app(settings)) as client:
        await l1_member(client, "an", admin)
        calendar = {"id": "always", "name": "Always", "time_zone": "UTC",
                    "hours": {d: ["00:00-24:00"] for d in
                              ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}  # fmt: skip
        answer = await client.post("/api/v1/sla/calendars", json=calendar, headers=admin)
        assert answer.status_code == 201, answer.text
        policy = {"id": "p2-fast", "name": "Fast P2", "ticket_type": "incident", "priority": "P2",
                  "first_response_seconds": 123, "resolution_seconds": 4567,
                  "calendar_id": "always"}  # fmt: skip
        answer = await client.post("/api/v1/sla/policies", json=policy, headers=admin)
        assert answer.status_code == 201, answer.text

        async def targets() -> dict[str, int]:
            created = await client.post(
                "/api/v1/incidents",
                json={"title": "Printer on fire", "impact": 2, "urgency": 1},
                headers=auth("al", "requester"),
            )
            ticket = created.json()["id"]
            assert created.json()["priority"] == "P2"

            async def timers() -> list[dict]:
                found = await client.get(f"/api/v1/sla/tickets/{ticket}", headers=agent)
                return found.json().get("timers", [])

            found = await eventually(timers, until=lambda t: len(t) == 2, what="timers")
            return {t["metric"]: t["target_seconds"] for t in found}

        # The policy reaches the processor asynchronously (outbox, bus): a new incident until then.
        measured = await eventually(
            targets, until=lambda t: t.get("resolution") == 4567, what="the managed policy"
        )
        assert measured == {"first_response": 123, "resolution": 4567}

        async def opened() -> int:
            kpis = await client.get("/api/v1/kpis", params={"granularity": "day"}, headers=agent)
            assert kpis.status_code == 200, kpis.text
            return int(kpis.json()["total"]["opened"])

        assert await eventually(opened, until=lambda n: n >= 1, what="KPI opened") >= 1


def test_the_dev_key_is_created_once_with_owner_only_access(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dev-signing-key"
    key = ensure_dev_key(path)
    assert len(key) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert ensure_dev_key(path) == key


def test_embedded_mode_generates_a_key_when_none_is_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ITSM_DEV_SIGNING_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.delenv("ITSM_DEV_SIGNING_KEY", raising=False)
    create_embedded_app(EmbeddedSettings())
    assert (tmp_path / "key").exists()
