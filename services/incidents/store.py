"""Incident persistence: the aggregate document with its outbox (MongoDB or in-memory twin)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from services.incidents.domain import Incident
from shared.store.repository import AggregateRepository


class IncidentRepository(AggregateRepository[Incident]):
    collection_name = "incidents"

    def to_document(self, aggregate: Incident) -> dict[str, Any]:
        document = asdict(aggregate)
        document["_id"] = document.pop("id")
        return document

    def from_document(self, document: dict[str, Any]) -> Incident:
        fields = {k: v for k, v in document.items() if k not in {"_id", "outbox"}}
        return Incident(id=document["_id"], **fields)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("requester", 1), ("_id", -1)])
        await self.collection.create_index([("number", 1)], unique=True)
