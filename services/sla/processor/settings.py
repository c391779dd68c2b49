"""Settings of the SLA stream processor (`ITSM_SLA_…`, falling back to the platform's `ITSM_…`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from shared.contracts.incidents import Priority
from shared.settings import ServiceSettings


class TargetOverride(BaseModel):
    """Replaces one priority's default targets, in seconds (e.g. a tiny target in a test)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    first_response: float | None = Field(None, gt=0)
    resolution: float | None = Field(None, gt=0)

    def durations(self, defaults: tuple[timedelta, timedelta]) -> tuple[timedelta, timedelta]:
        first, resolution = defaults
        return (
            timedelta(seconds=self.first_response) if self.first_response else first,
            timedelta(seconds=self.resolution) if self.resolution else resolution,
        )


class SlaSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ITSM_SLA_", extra="ignore")

    service_name: str = "sla"
    # The Faust application id: the consumer group, and the prefix of the processor's own topics
    # (`<app_id>-sla-state-changelog`, `<app_id>-sla-due`). Change it and the state starts over.
    app_id: str = Field("itsm-sla", pattern=r"^[A-Za-z0-9._-]+$")
    # Table storage: memory:// rebuilds every table from its changelog at start-up; rocksdb://
    # (the `rocksdict` package) keeps it on disk under data_dir and only catches up.
    store: str = Field("memory://", pattern=r"^(memory|rocksdb)://")
    data_dir: Path | None = None
    # How often each worker looks for due wake-ups of the tickets it owns (seconds).
    tick_interval: float = Field(0.2, gt=0, le=60)
    # A due record that has not been answered by then is sent again.
    tick_retry: float = Field(5.0, gt=0)
    # At most this many due tickets are sent and not yet applied at any time (one record per
    # partition and tick carries them): a burst of deadlines drains over several ticks instead
    # of one tick that starves the consumer.
    due_batch: int = Field(2000, ge=1, le=65535)
    # Alerts due within this many seconds are prepared ahead (state loaded, engine run, facts
    # encoded) and sent at their instant in one batch, at most prepare_limit tickets at a time:
    # a burst of deadlines is then a burst of sends, not of processing. 0: never prepared.
    prepare_ahead: float = Field(10.0, ge=0, le=600)
    prepare_limit: int = Field(20_000, ge=1, le=10_000_000)
    # Where a new consumer group starts reading the incident events. `earliest` rebuilds every
    # ticket's SLA from the retained history; `latest` only measures tickets from now on.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    table_standby_replicas: int = Field(1, ge=0)
    # How long a crashed worker keeps its partitions before the group moves them (Faust's
    # default is 60 s). The broker's group.min.session.timeout.ms (6 s by default) is the floor.
    session_timeout: float = Field(10.0, ge=6, le=1800)
    # Bounds (docs/security.md): unprocessed records a stream buffers before flow control pauses
    # its fetch (Faust's default, explicit), and how long a request to the broker (a consumer's
    # or admin's: at least the session timeout) or a produced batch may take before it fails.
    stream_buffer_maxsize: int = Field(4096, ge=1, le=1_000_000)
    request_timeout: float = Field(90.0, ge=6, le=3600)
    producer_request_timeout: float = Field(1200.0, ge=10, le=3600)
    web_enabled: bool = False
    web_port: int = Field(6066, ge=1, le=65535)
    # Prometheus metrics at http://<metrics_host>:<metrics_port>/metrics (0: not served). Not
    # Faust's web server: that one shows the tables, so it stays on loopback.
    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"  # noqa: S104 -- Prometheus scrapes it from another host
    # How often the worker measures the consumer lag of its source partitions (seconds).
    metrics_interval: float = Field(5.0, gt=0, le=300)
    # How often the worker gives the C heap's free pages back to the system (seconds; 0: never).
    # After a load the resident set otherwise stays at its peak (shared/heap.py).
    heap_trim_interval: float = Field(10.0, ge=0, le=3600)
    # Per-priority replacements for the default catalog's targets, e.g.
    # ITSM_SLA_TARGETS='{"P1": {"first_response": 120}}'.
    targets: dict[Priority, TargetOverride] = Field(default_factory=dict)
    # Streaming KPIs (docs/sla.md): how late an event may come (event time) and still count,
    # how often changed KPI partials are published, and how long (event time) a final partial
    # stays in the table after its final snapshot.
    kpi_grace: float = Field(600.0, ge=0)
    kpi_publish_interval: float = Field(1.0, gt=0, le=60)
    # Incident events whose KPI plans are applied in memory before their entries are written
    # (once per entry per batch, not per event); a quiet partition is flushed by the KPI timer.
    kpi_batch: int = Field(500, ge=1, le=100_000)
    kpi_retention: float = Field(86400.0, ge=0)

    def broker_urls(self) -> list[str]:
        return [f"kafka://{host.strip()}" for host in self.kafka_bootstrap.split(",") if host]
