"""Alert intake over HTTP, for monitoring systems that cannot write to Kafka: Prometheus
Alertmanager's webhook. Alerts are put on the ingest topic as CloudEvents keyed by fingerprint,
and from there take the same path as alerts published to Kafka directly."""

from __future__ import annotations

import hashlib
from typing import get_args

from fastapi import APIRouter, status
from pydantic import BaseModel

from services.incidents.api.deps import BusDep, Machine
from services.incidents.schemas import AlertmanagerAlert, AlertmanagerWebhook
from shared.contracts import Envelope, Topic
from shared.contracts.alerts import AlertCleared, AlertData, AlertFired
from shared.http.clock import Now
from shared.http.problems import problem_responses

router = APIRouter(prefix="/api/v1/alerts", tags=["alert intake"])
SEVERITIES = set(get_args(AlertData.model_fields["severity"].annotation))


class Accepted(BaseModel):
    accepted: int
    topic: str


def fingerprint_of(alert: AlertmanagerAlert) -> str:
    """Alertmanager's own fingerprint, else a stable hash of the label set."""
    if alert.fingerprint:
        return alert.fingerprint
    canonical = "\x1f".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def to_event(alert: AlertmanagerAlert, source: str) -> Envelope:
    labels = alert.labels
    severity = labels.get("severity", "warning").lower()
    fields = dict(
        fingerprint=fingerprint_of(alert),
        alertname=labels.get("alertname", "unnamed alert")[:200],
        starts_at=alert.startsAt,
        severity=severity if severity in SEVERITIES else "warning",
        summary=alert.annotations.get("summary", "")[:500],
        description=alert.annotations.get("description", "")[:10_000],
        service=(labels.get("service") or labels.get("job") or None),
        instance=labels.get("instance"),
        labels={k[:100]: v[:500] for k, v in labels.items()},
        generator_url=alert.generatorURL,
    )
    data: AlertData
    if alert.status == "resolved":
        data = AlertCleared(**fields, ends_at=alert.endsAt or alert.startsAt)
    else:
        data = AlertFired(**fields)
    return Envelope(
        type=data.event_type,
        source=source,
        subject=data.fingerprint,
        sequence=0,
        data=data.model_dump(mode="json"),
    )


@router.post(
    "/alertmanager",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(401, 403, 413, 422, 503),
    summary="Prometheus Alertmanager webhook (service role)",
)
async def alertmanager_webhook(
    payload: AlertmanagerWebhook, caller: Machine, bus: BusDep, now: Now
) -> Accepted:
    source = f"/alertmanager/{caller.subject}/{payload.receiver}"[:300]
    events = [to_event(alert, source) for alert in payload.alerts]
    await bus.publish(Topic.INGEST, events)
    return Accepted(accepted=len(events), topic=str(Topic.INGEST))
