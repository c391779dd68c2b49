"""Redelivered and stale events, in memory (the real-broker version is
tests/security/test_hostile_events.py): an alert firing after its clearing opens no second
incident; an incident event or SLA fact older than the last one applied pages no one."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from services.incidents import domain, intake
from services.incidents.main import IncidentsSettings, build
from services.notify import admin, handlers
from services.notify.api.schemas import PolicyCreate
from shared.contracts.alerts import AlertCleared, AlertFired
from shared.contracts.envelope import Envelope
from shared.contracts.incidents import IncidentCreated
from shared.contracts.sla import SlaMet
from shared.ids import uuid7
from shared.runtime import in_memory
from tests.support.notify import breach, created, ladder, resolved, sla_fact
from tests.unit.test_notify_service import Harness, harness  # noqa: F401 (the fixture)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def alert(kind: type[AlertFired], starts: datetime, **extra: object) -> Envelope:
    data = kind(
        fingerprint="fp-1", alertname="DiskFull", starts_at=starts, severity="critical",
        summary="Disk full on db-1", **extra,
    )  # fmt: skip
    return Envelope(
        type=kind.event_type, source="/alertmanager", subject="fp-1", sequence=0,
        data=data.model_dump(mode="json"),
    )  # fmt: skip


def test_a_firing_is_counted_on_its_incident_resolved_or_not() -> None:
    fired = AlertFired.model_validate(alert(AlertFired, T0).data)
    incident, _ = domain.open_from_alert(
        fired, incident_id="i", number="INC1", reporter="m", now=T0, policy=domain.Policy()
    )
    assert domain.counted(incident, fired)
    assert not domain.counted(incident, fired.model_copy(update={"starts_at": T0 + M}))
    assert not domain.counted(incident, fired.model_copy(update={"fingerprint": "fp-2"}))
    assert not domain.counted(None, fired)


async def test_a_firing_redelivered_after_its_clearing_opens_no_second_incident() -> None:
    settings = IncidentsSettings(auth_mode="dev", dev_signing_key=SecretStr("k" * 32))
    unit = await build(settings, in_memory(settings))
    incidents = unit.state["incidents"]
    fired = alert(AlertFired, T0)
    await intake.on_alert(incidents, fired, now=T0)
    await intake.on_alert(incidents, alert(AlertCleared, T0, ends_at=T0 + M), now=T0 + M)
    for copy in (fired, replace(fired, id=uuid7())):  # redelivered; re-sent by Alertmanager
        await intake.on_alert(incidents, copy, now=T0 + 2 * M)
    found, total = await incidents.repo.find({"alert.fingerprint": "fp-1"}, limit=10)
    assert total == 1 and found[0].status == "resolved"
    await intake.on_alert(incidents, alert(AlertFired, T0 + 5 * M), now=T0 + 5 * M)  # new firing
    _, total = await incidents.repo.find({"alert.fingerprint": "fp-1"}, limit=10)
    assert total == 2


async def test_a_stale_incident_event_starts_no_escalation(harness: Harness) -> None:  # noqa: F811
    notify = harness.notify
    on_creation = ladder("creation-ladder", event_types=(IncidentCreated.event_type,))
    policy = PolicyCreate.model_validate(on_creation).to_policy("creation-ladder", 1)
    await admin.create_policy(notify, policy, by="admin", now=T0)
    created_p2 = created("INC1", T0)
    await handlers.on_incident_event(notify, created_p2, now=T0)  # the ladder pages alice
    await handlers.on_incident_event(notify, resolved("INC1", T0 + M), now=T0 + M)
    before = await notify.escalations.get("INC1")
    assert before is not None and len(before.book.escalations) == 1
    stale = replace(created_p2, id=uuid7())  # sequence 1, after the resolution (2)
    await handlers.on_incident_event(notify, stale, now=T0 + 2 * M)
    assert await notify.escalations.get("INC1") == before
    view, last = await notify.views.get("INC1")
    assert last == 2 and view is not None


async def test_a_stale_breach_after_the_clock_stopped_starts_no_escalation(
    harness: Harness,  # noqa: F811
) -> None:
    notify = harness.notify
    first = breach("INC1", T0, sequence=2)
    await handlers.on_sla_event(notify, first, now=T0)
    await handlers.on_sla_event(notify, sla_fact(SlaMet, "INC1", T0 + M, sequence=3), now=T0 + M)
    settled = await notify.escalations.get("INC1")
    assert settled is not None and all(e.ended_at for e in settled.book.escalations)
    await handlers.on_sla_event(notify, replace(first, id=uuid7()), now=T0 + 2 * M)  # stale
    assert await notify.escalations.get("INC1") == settled
    await handlers.on_sla_event(notify, first, now=T0 + 2 * M)  # redelivered: nothing either
    assert await notify.escalations.get("INC1") == settled
    newer = breach("INC1", T0 + 3 * M, sequence=4, metric="first_response")
    await handlers.on_sla_event(notify, newer, now=T0 + 3 * M)
    stored = await notify.escalations.get("INC1")
    assert stored is not None and len(stored.book.escalations) == 2  # a newer fact still pages
