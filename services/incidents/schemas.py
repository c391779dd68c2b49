"""HTTP input and output models (separate, so no field is mass-assignable)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.incidents.domain import Incident
from shared.contracts.incidents import Priority


class IncidentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=20_000)
    impact: int = Field(3, ge=1, le=3, description="1 = extensive/widespread .. 3 = minor")
    urgency: int = Field(3, ge=1, le=3, description="1 = critical .. 3 = low")
    ticket_type: Literal["incident", "service_request"] = "incident"
    service: str | None = Field(None, max_length=200)
    requester: str | None = Field(
        None,
        max_length=200,
        description="Record on behalf of this user (staff and service callers only)",
    )


class IncidentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=20_000)
    impact: int | None = Field(None, ge=1, le=3)
    urgency: int | None = Field(None, ge=1, le=3)


class IncidentRead(BaseModel):
    id: str
    number: str
    title: str
    description: str
    requester: str
    impact: int
    urgency: int
    priority: Priority
    ticket_type: str
    service: str | None
    status: str
    opened_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def of(cls, incident: Incident) -> IncidentRead:
        return cls.model_validate(incident, from_attributes=True)
