"""Monitoring alert contracts, published by external systems on the ingest topic.

The record key is the alert fingerprint, so one alert's firings and clearings stay ordered.
Prometheus Alertmanager's webhook is translated into these by the incidents service.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.contracts.registry import EventData, event_type
from shared.contracts.topics import Topic


class AlertData(EventData):
    fingerprint: str = Field(min_length=1, max_length=200)
    alertname: str = Field(min_length=1, max_length=200)
    starts_at: datetime = Field(description="When the alerting condition began")
    severity: Literal["critical", "error", "warning", "info"] = "warning"
    summary: str = Field("", max_length=500)
    description: str = Field("", max_length=10_000)
    service: str | None = Field(None, max_length=200)
    instance: str | None = Field(None, max_length=500)
    labels: dict[str, str] = Field(default_factory=dict)
    generator_url: str | None = Field(None, max_length=2_000)


@event_type("itsm.alert.fired.v1", topic=Topic.INGEST, aggregate="alert")
class AlertFired(AlertData):
    pass


@event_type("itsm.alert.cleared.v1", topic=Topic.INGEST, aggregate="alert")
class AlertCleared(AlertData):
    ends_at: datetime
