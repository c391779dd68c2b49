"""Server-sent event streams of SLA facts and KPI updates, as they reach this replica.

A stream starts with a `: connected` comment and a reconnection delay, then sends one event per
fact (`event:` its CloudEvents type, `id:` its event id, `data:` the event as JSON), and a
`: heartbeat` comment when nothing was sent for the heartbeat interval. There is no replay:
`Last-Event-ID` is ignored, so a reconnecting client gets the events from its reconnection on
and reads the current state from the query endpoints. A client too slow to keep up is sent a
`dropped` event and the stream ends. An agent is sent the facts of the tickets they work only
(as `GET /api/v1/sla/tickets/{id}` answers them).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from services.sla import handlers
from services.sla.api.deps import FactHub, Heartbeat, KpiHub, Reach, Reader, ReadModel
from services.sla.api.live import LiveHub, Wants
from services.sla.domain.kpi_partials import Granularity
from services.sla.handlers import SlaReadModel
from shared.auth.reach import AgentReach
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import Priority
from shared.contracts.sla import METRIC_PATTERN
from shared.http.problems import problem_responses

router = APIRouter(tags=["streams"])

RECONNECT_MS = 3_000


def event_payload(envelope: Envelope) -> dict[str, Any]:
    return {
        "id": envelope.id,
        "type": envelope.type,
        "subject": envelope.subject,
        "sequence": envelope.sequence,
        "time": envelope.time.isoformat(),
        "data": envelope.data,
    }


Admits = Callable[[Envelope], Awaitable[bool]]


async def everyone(envelope: Envelope) -> bool:
    return True


def worked_by(model: SlaReadModel, reach: AgentReach | None, ttl: float = 30.0) -> Admits:
    """Facts of the tickets the caller works; each ticket's answer is kept `ttl` seconds."""
    if reach is None or reach.everything:
        return everyone
    answers: dict[str, tuple[float, bool]] = {}

    async def admits(envelope: Envelope) -> bool:
        at = time.monotonic()
        cached = answers.get(envelope.subject)
        if cached is not None and at - cached[0] < ttl:
            return cached[1]
        if len(answers) >= 10_000:
            answers.clear()
        answer = await handlers.works_on(model, reach, envelope.subject)
        answers[envelope.subject] = (at, answer)
        return answer

    return admits


async def server_sent_events(
    hub: LiveHub, wants: Wants, heartbeat: float, admits: Admits = everyone
) -> AsyncIterator[ServerSentEvent]:
    client = hub.connect(wants)
    try:
        yield ServerSentEvent(comment="connected", retry=RECONNECT_MS)
        sent = time.monotonic()
        while True:
            envelope = await client.next(heartbeat)
            if client.dropped:
                yield ServerSentEvent(
                    event="dropped", data={"reason": "the client read too slowly; reconnect"}
                )
                return
            if envelope is not None and await admits(envelope):
                yield ServerSentEvent(
                    event=envelope.type, id=envelope.id, data=event_payload(envelope)
                )
                sent = time.monotonic()
            elif envelope is None or time.monotonic() - sent >= heartbeat:
                # also when every event is someone else's: the connection must not look idle
                yield ServerSentEvent(comment="heartbeat")
                sent = time.monotonic()
    finally:
        hub.disconnect(client)


def sla_fact_filter(ticket: str | None, priority: str | None, metric: str | None) -> Wants:
    def wants(envelope: Envelope) -> bool:
        data = envelope.data
        return (
            (ticket is None or envelope.subject == ticket)
            and (priority is None or data.get("priority") == priority)
            and (metric is None or data.get("metric") == metric)
        )

    return wants


@router.get(
    "/api/v1/sla/stream",
    response_class=EventSourceResponse,
    responses=problem_responses(401, 403, 422),
    summary="SLA facts as they happen (server-sent events)",
)
async def stream_sla_facts(
    reach: Reach,
    model: ReadModel,
    hub: FactHub,
    heartbeat: Heartbeat,
    ticket: Annotated[str | None, Query(max_length=200, description="Only this ticket")] = None,
    priority: Priority | None = None,
    metric: Annotated[str | None, Query(pattern=METRIC_PATTERN, max_length=200)] = None,
) -> AsyncIterator[ServerSentEvent]:
    wants = sla_fact_filter(ticket, priority, metric)
    async for event in server_sent_events(hub, wants, heartbeat, worked_by(model, reach)):
        yield event


def kpi_filter(
    granularity: str | None, team: str | None, priority: str | None, service: str | None
) -> Wants:
    def wants(envelope: Envelope) -> bool:
        data = envelope.data
        return all(
            value is None or data.get(name) == value
            for name, value in (
                ("granularity", granularity),
                ("team", team),
                ("priority", priority),
                ("service", service),
            )
        )

    return wants


@router.get(
    "/api/v1/kpis/stream",
    response_class=EventSourceResponse,
    responses=problem_responses(401, 403, 422),
    summary="KPI partial updates as they happen (server-sent events)",
)
async def stream_kpis(
    user: Reader,
    hub: KpiHub,
    heartbeat: Heartbeat,
    granularity: Granularity | None = None,
    team: Annotated[str | None, Query(max_length=200)] = None,
    priority: Annotated[str | None, Query(max_length=200)] = None,
    service: Annotated[str | None, Query(max_length=200)] = None,
) -> AsyncIterator[ServerSentEvent]:
    wants = kpi_filter(granularity, team, priority, service)
    async for event in server_sent_events(hub, wants, heartbeat):
        yield event
