"""Streaming KPI snapshots (`itsm.sla.kpi_updated.v1`), published by the SLA processor on the
compacted KPI topic.

Each event is the latest state of one KPI *partial*: the figures of one bucket (granularity,
UTC window, team, priority, service) counted from ONE source partition of the processor's input
(incident events, change events, the processor's due records). Subject and record key are the
partial's key, so compaction keeps the latest snapshot per partial; `sequence` grows with every
change of a partial (2 x (watermark + 1), + 1 once final), so a consumer keeps the highest.
Merging the partials of many partitions and dims gives the KPIs (`services.sla.domain.kpis.
summarize`): counts and sums add up, the sketches merge, `backlog` is a per-partition gauge.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.registry import EventData, event_type
from shared.contracts.topics import Topic


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KpiSketch(_Frozen):
    """A log-bucketed histogram of durations (relative accuracy 1 %): bucket i holds values in
    (g^(i-1), g^i] seconds with g = 1.01 / 0.99; `zeros` counts values under 1 ms."""

    zeros: int = Field(ge=0)
    bins: list[tuple[int, int]] = Field(description="[bucket index, count] pairs")


class KpiDuration(_Frozen):
    total: float = Field(ge=0, description="Sum of the samples, in seconds")
    sketch: KpiSketch


class KpiFiguresData(_Frozen):
    opened: int = Field(ge=0)
    resolved: int = Field(ge=0)
    reopened: int = Field(ge=0)
    first_response: KpiDuration = Field(description="Times to first response")
    resolution: KpiDuration = Field(description="Times to resolve a ticket's first resolution")
    csat_count: int = Field(ge=0)
    csat_sum: int = Field(ge=0)
    fcr_eligible: int = Field(ge=0, description="First resolutions")
    fcr_count: int = Field(ge=0, description="First resolutions at first contact")
    sla_met: int = Field(ge=0)
    sla_missed: int = Field(ge=0)
    breaches: int = Field(ge=0)
    changes_completed: int = Field(ge=0)
    changes_successful: int = Field(ge=0)
    late_events: int = Field(ge=0, description="Contributions refused: their window was final")


@event_type("itsm.sla.kpi_updated.v1", topic=Topic.SLA_KPIS, aggregate="kpi")
class KpiUpdated(EventData):
    """The latest figures of one KPI partial."""

    source_topic: str
    source_partition: int = Field(ge=0)
    granularity: Literal["hour", "day"]
    window_start: datetime
    window_end: datetime
    team: str = Field(description="Assignment group, '-' when none (changes, unassigned)")
    priority: str = Field(description="P1..P5, '-' for changes")
    service: str = Field(description="Service, '-' when none")
    figures: KpiFiguresData
    backlog: int | None = Field(
        description="Open tickets of these dims in this source partition (a gauge); none when "
        "no ticket of these dims opened or closed here"
    )
    watermark: int = Field(ge=-1, description="The highest source offset applied")
    final: bool = Field(description="The window's end plus the grace period has passed")
