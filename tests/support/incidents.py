"""A small world for incidents API tests: assignment groups, people and an incident."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

Auth = Callable[..., dict[str, str]]

# persona -> (subject, role)
PEOPLE = {
    "owner": ("alice", "requester"),
    "stranger": ("bob", "requester"),
    "member": ("ann", "agent"),
    "outsider": ("otto", "agent"),
    "manager": ("maria", "manager"),
    "change_manager": ("carl", "change-manager"),
    "machine": ("monitor", "service"),
}
PERSONAS = list(PEOPLE)
BASE = "/api/v1/incidents"


@dataclass
class World:
    client: httpx.AsyncClient
    auth: Auth

    def headers(self, persona: str) -> dict[str, str]:
        subject, role = PEOPLE[persona]
        return self.auth(subject, role)

    async def setup_groups(self) -> None:
        manager = self.headers("manager")
        for group in (
            {"name": "service-desk", "tier": "L1", "members": ["ann"], "manager": "maria"},
            {"name": "network", "tier": "L2", "members": ["otto"], "manager": "maria"},
        ):
            response = await self.client.post("/api/v1/groups", json=group, headers=manager)
            assert response.status_code == 201, response.text

    async def incident(
        self, *, title: str = "VPN drops", assign: bool = True, **fields: object
    ) -> dict:
        created = await self.client.post(
            BASE,
            json={"title": title, "impact": 2, "urgency": 1, **fields},
            headers=self.headers("owner"),
        )
        assert created.status_code == 201, created.text
        incident = created.json()
        if assign:
            incident = await self.do(
                incident["id"], "assignment", "manager", {"group": "service-desk"}
            )
        return incident

    async def do(
        self, incident_id: str, action: str, persona: str, body: dict | None = None
    ) -> dict:
        response = await self.client.post(
            f"{BASE}/{incident_id}/{action}", json=body or {}, headers=self.headers(persona)
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def resolved(self) -> dict:
        incident = await self.incident()
        return await self.do(
            incident["id"], "resolve", "member", {"code": "fixed", "notes": "done"}
        )
