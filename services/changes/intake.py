"""Events from other systems: CI/CD deployments (CDEvents on the ingest topic) become standard
changes, and incidents are correlated with the changes they name or that recently touched
their item. Idempotent: a redelivered event finds its work already done."""

from __future__ import annotations

import contextlib
import re
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.changes.domain import actions
from services.changes.domain.model import Change, Plan, Window
from services.changes.handlers import SOURCE, Changes, commit, entry
from services.changes.store import ConfigurationItem
from shared.bus.port import PermanentEventError, TransientError
from shared.contracts.changes import ImplementationOutcome
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import IncidentCreated
from shared.ids import uuid7
from shared.store.errors import AlreadyExists, ConcurrencyConflict
from shared.store.outcomes import store_created

CDEVENTS_PREFIX = "dev.cdevents.service."
OUTCOMES: dict[str, ImplementationOutcome] = {
    "deployed": "successful",
    "upgraded": "successful",
    "rolledback": "rolled_back",
}
CHANGE_NUMBER = re.compile(r"\bCHG\d{7}\b")


class Environment(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=200)


class ServiceContent(BaseModel):
    model_config = ConfigDict(extra="allow")
    environment: Environment
    artifactId: str = Field("", max_length=1_000)


class ServiceSubject(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=200)
    content: ServiceContent


class ServiceEvent(BaseModel):
    """The part of a CDEvents `service.*` event (spec v0.4) that we use."""

    model_config = ConfigDict(extra="allow")
    subject: ServiceSubject


def cdevent_kind(event_type: str) -> str | None:
    """`dev.cdevents.service.deployed.0.2.0` -> `deployed`."""
    if not event_type.startswith(CDEVENTS_PREFIX):
        return None
    kind = event_type[len(CDEVENTS_PREFIX) :].split(".")[0]
    return kind if kind in OUTCOMES else None


async def on_ingest(changes: Changes, envelope: Envelope, *, now: datetime) -> None:
    kind = cdevent_kind(envelope.type)
    if kind is None:
        return  # alerts and other producers' events are not ours
    try:
        event = ServiceEvent.model_validate(envelope.data)
    except ValidationError as exc:
        raise PermanentEventError(
            f"not a CDEvents service event: {exc.error_count()} errors"
        ) from exc
    existing, _ = await changes.repo.find({"origin": envelope.id}, limit=1, count=False)
    if existing:
        return  # already recorded (redelivery)
    await record_deployment(changes, envelope, event, kind, now=now)


async def record_deployment(
    changes: Changes, envelope: Envelope, event: ServiceEvent, kind: str, *, now: datetime
) -> Change:
    """A deployment that happened is recorded as a standard change, submitted (pre-approved),
    started and completed with its outcome, in one write."""
    service = event.subject.id.removeprefix("service/")
    environment = event.subject.content.environment.id
    artifact = event.subject.content.artifactId or "unknown artifact"
    if not await changes.items.get(service):
        with contextlib.suppress(AlreadyExists):  # registered meanwhile
            await changes.items.add(ConfigurationItem(service, service, 1), [])
    happened = envelope.time
    command = actions.NewChange(
        title=f"{kind.capitalize()} {artifact} to {service} ({environment})"[:200],
        change_type="standard",
        requester=f"cicd:{envelope.source}"[:200],
        description=f"Recorded from CDEvent {envelope.type} ({envelope.id}).",
        template="cdevents-deployment",
        services=(service,),
        configuration_items=(service,),
        plan=Plan("automated pipeline deployment", "pipeline rollback", "pipeline checks", True),
        window=Window(happened, happened + timedelta(seconds=1)),
        origin=envelope.id,
    )
    number = f"CHG{await changes.next_number():07d}"
    actor = command.requester
    change, events = actions.create(command, change_id=uuid7(), number=number, now=now)
    outcome = OUTCOMES[kind]
    change, more = actions.submit(change, actor=actor, now=now, others=[], freezes=[])
    events += more
    change, more = actions.start(change, actor=actor, now=happened)
    events += more
    change, more = actions.complete(
        change, outcome, actor=actor, now=now, actual_start=happened, actual_end=happened
    )
    events += more
    return await store_created(
        changes.repo, change, events, aggregate_id=change.id, source=SOURCE, now=now,
        audit=entry(None, change, events, now),
    )  # fmt: skip


async def on_incident_event(changes: Changes, envelope: Envelope, *, now: datetime) -> None:
    if envelope.type != IncidentCreated.event_type:
        return
    incident = IncidentCreated.model_validate(envelope.data)
    text = f"{incident.title}\n{incident.description}"
    for number in sorted(set(CHANGE_NUMBER.findall(text))):
        change = await changes.repo.by_number(number)
        if change is not None:
            await link(changes, change, incident, "named", now=now)
    recent = await changes.repo.completed_on(
        item=incident.configuration_item,
        service=incident.service,
        since=incident.opened_at - changes.correlation_window,
        until=incident.opened_at,
    )
    for change in recent:
        await link(changes, change, incident, "suggested", now=now)


async def link(
    changes: Changes, change: Change, incident: IncidentCreated, kind: Any, *, now: datetime
) -> None:
    outcome = actions.link_incident(
        change,
        incident_id=incident.incident_id,
        incident_number=incident.number,
        kind=kind,
        now=now,
    )
    try:
        await commit(changes, change, outcome, now=now)
    except ConcurrencyConflict as exc:  # re-read and retry the event
        raise TransientError(f"change {change.number} changed while linking") from exc
