"""Demo data for the embedded run (`make run`): a few people, groups, incidents, changes, a
freeze and an escalation policy, recorded through the platform's own APIs so that every event,
SLA timer and KPI follows as it would for real input.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from shared.auth.tokens import mint_dev_token
from shared.settings import ServiceSettings

AGENTS = ["ann", "bob"]


class DemoClient:
    """Calls the in-process APIs as a named person with one role."""

    def __init__(self, http: httpx.AsyncClient, settings: ServiceSettings) -> None:
        self.http = http
        self.settings = settings

    def headers(self, subject: str, role: str) -> dict[str, str]:
        key = self.settings.dev_signing_key
        assert key is not None
        token = mint_dev_token(
            key.get_secret_value(),
            subject=subject,
            roles=[role],
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
        )
        return {"Authorization": f"Bearer {token}"}

    async def call(self, who: tuple[str, str], method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, path, json=body, headers=self.headers(*who))
        if response.status_code >= 400:
            raise RuntimeError(
                f"demo data: {method} {path} -> {response.status_code} {response.text}"
            )
        return response.json() if response.content else None


MANAGER = ("max", "manager")
CHANGE_MANAGER = ("carl", "change-manager")
AGENT = ("ann", "agent")
REQUESTER = ("rita", "requester")


async def seed_people(demo: DemoClient) -> None:
    await demo.call(
        MANAGER,
        "POST",
        "/api/v1/groups",
        {"name": "service-desk", "tier": "L1", "members": AGENTS, "manager": "max"},
    )
    await demo.call(
        MANAGER,
        "POST",
        "/api/v1/groups",
        {"name": "network", "tier": "L2", "members": ["nina"], "manager": "max"},
    )
    for person in ["ann", "bob", "max"]:
        await demo.call(
            MANAGER,
            "PUT",
            f"/api/v1/notify/people/{person}",
            {"name": person.title(), "email": f"{person}@example.com"},
        )
    await demo.call(
        MANAGER,
        "POST",
        "/api/v1/notify/policies",
        {
            "id": "p1-opened",
            "name": "P1 opened: the desk, then the manager",
            "match": {"event_types": ["itsm.incident.created.v1"], "priorities": ["P1"]},
            "levels": [
                {
                    "delay_seconds": 0,
                    "targets": [{"kind": "user", "name": "ann"}],
                    "channels": ["email"],
                },
                {
                    "delay_seconds": 900,
                    "targets": [{"kind": "user", "name": "max"}],
                    "channels": ["email"],
                },
            ],
        },
    )


async def seed_incidents(demo: DemoClient) -> None:
    tickets = [
        ("Mail server not reachable from Berlin office", 1, 1, "mail"),
        ("VPN drops every 10 minutes", 2, 1, "vpn"),
        ("Printer on 3rd floor jams", 3, 2, None),
        ("New laptop for onboarding", 3, 3, None),
    ]
    created = []
    for title, impact, urgency, service in tickets:
        created.append(
            await demo.call(
                REQUESTER,
                "POST",
                "/api/v1/incidents",
                {"title": title, "impact": impact, "urgency": urgency, "service": service},
            )
        )
    vpn, printer = created[1]["id"], created[2]["id"]
    await demo.call(
        AGENT,
        "POST",
        f"/api/v1/incidents/{vpn}/assignment",
        {"group": "service-desk", "assignee": "ann"},
    )
    await demo.call(AGENT, "POST", f"/api/v1/incidents/{vpn}/start")
    await demo.call(
        AGENT,
        "POST",
        f"/api/v1/incidents/{vpn}/replies",
        {"body": "We are looking into it; does it happen on Wi-Fi and cable?"},
    )
    await demo.call(
        AGENT,
        "POST",
        f"/api/v1/incidents/{printer}/assignment",
        {"group": "service-desk", "assignee": "bob"},
    )
    await demo.call(
        AGENT,
        "POST",
        f"/api/v1/incidents/{printer}/resolve",
        {"code": "fixed", "notes": "Cleared the paper path and replaced the roller."},
    )


async def seed_changes(demo: DemoClient, now: datetime) -> None:
    for item in [{"name": "mail-01", "service": "mail"}, {"name": "core-router", "service": "vpn"}]:
        await demo.call(CHANGE_MANAGER, "POST", "/api/v1/configuration-items", item)
    await demo.call(
        CHANGE_MANAGER, "PUT", "/api/v1/approval-groups/cab", {"members": ["cara", "carl"]}
    )
    freeze_start = (now + timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    await demo.call(
        CHANGE_MANAGER,
        "POST",
        "/api/v1/freeze-windows",
        {
            "name": "Quarter-end freeze",
            "start": freeze_start.isoformat(),
            "end": (freeze_start + timedelta(days=2)).isoformat(),
        },
    )
    await demo.call(
        CHANGE_MANAGER,
        "POST",
        "/api/v1/maintenance-windows",
        {
            "name": "Saturday night",
            "weekday": 5,
            "start": "22:00",
            "duration_minutes": 360,
            "zone": "Europe/Berlin",
        },
    )
    plan = {
        "implementation": "Apply the patch",
        "backout": "Restore the snapshot",
        "test": "Send a test mail",
        "backout_tested": True,
    }
    start = (now + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    patch = await demo.call(
        REQUESTER,
        "POST",
        "/api/v1/changes",
        {
            "title": "Patch mail-01 to the latest release",
            "change_type": "normal",
            "implementer": "ann",
            "configuration_items": ["mail-01"],
            "services": ["mail"],
            "plan": plan,
            "planned_start": start.isoformat(),
            "planned_end": (start + timedelta(hours=2)).isoformat(),
            "risk_answers": {
                "user_impact": "medium",
                "complexity": "low",
                "tested_in_staging": True,
            },
        },
    )
    # Overlaps the patch on the same server: the calendar marks both as a conflict.
    storage = await demo.call(
        REQUESTER,
        "POST",
        "/api/v1/changes",
        {
            "title": "Move mail-01 to the new storage",
            "change_type": "normal",
            "configuration_items": ["mail-01"],
            "services": ["mail"],
            "plan": plan,
            "planned_start": (start + timedelta(hours=1)).isoformat(),
            "planned_end": (start + timedelta(hours=4)).isoformat(),
        },
    )
    frozen = freeze_start + timedelta(hours=10)
    firmware = await demo.call(
        REQUESTER,
        "POST",
        "/api/v1/changes",
        {
            "title": "Upgrade core-router firmware",
            "change_type": "normal",
            "configuration_items": ["core-router"],
            "services": ["vpn"],
            "plan": plan,
            "planned_start": frozen.isoformat(),
            "planned_end": (frozen + timedelta(hours=1)).isoformat(),
        },
    )
    for change in (patch, storage, firmware):  # into the approval inbox, then the second is refused
        await demo.call(REQUESTER, "POST", f"/api/v1/changes/{change['id']}/submit")
        await demo.call(CHANGE_MANAGER, "POST", f"/api/v1/changes/{change['id']}/assessment")
    # Names the patch: the changes service links them, and the incident view shows the change.
    await demo.call(
        REQUESTER,
        "POST",
        "/api/v1/incidents",
        {
            "title": f"Mail to partners bounces since the {patch['number']} announcement",
            "impact": 3,
            "urgency": 2,
            "service": "mail",
        },
    )


async def seed(app: FastAPI, settings: ServiceSettings, now: datetime | None = None) -> None:
    """Record the demo data; only in dev auth mode (it signs its own tokens)."""
    if settings.auth_mode != "dev" or settings.dev_signing_key is None:
        return
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
        demo = DemoClient(http, settings)
        await seed_people(demo)
        await seed_incidents(demo)
        await seed_changes(demo, now or datetime.now(UTC))
