"""One incident's whole life across the distributed platform, every service its own process
(`python -m devtools.stack` on a private Kafka and FerretDB), nothing in-process but the test's
own SMTP server:

a change is completed on a database and a CI/CD pipeline deploys the payments service (a
CDEvent on the ingest topic, recorded by changes as a standard change); Alertmanager posts a
critical alert naming the change to the incidents service; the P1 incident's SLA clocks start
(the SLA API shows the first response running); the first response breaches (the SLA worker's
timer); notify pages the on-call person, whose mail reaches a real loopback SMTP server; the
signed link in the mail acknowledges it; an agent takes the incident, replies and resolves it;
the SLA API shows the resolution met and the first response missed; the KPIs count it; and the
changes service links it to the change it names (caused) and the deployment that touched its
service just before (suggested).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from devtools.localstack import free_port
from shared.bus.kafka import KafkaBus
from shared.contracts import Topic
from shared.contracts.codec import KafkaRecord, decode
from tests.e2e.conftest import stack_for
from tests.integration.test_changes_on_real_stack import deployed
from tests.support.incidents import BASE, World
from tests.support.kafka import tail
from tests.support.notify import Mailbox, ladder
from tests.support.polling import eventually
from tests.support.stack import PrivateStack
from tests.unit.test_changes_api import Api

pytestmark = [pytest.mark.e2e, pytest.mark.infra, pytest.mark.timeout(300)]
FIRST_RESPONSE = 15.0  # seconds: the P1 target, long enough to see the clock run first
ONCALL, LEAD = "oncall@example.com", "lead@example.com"
ESCALATIONS = "/api/v1/notify/escalations"
Auth = Callable[..., dict[str, str]]


@dataclass
class Platform:
    stack: PrivateStack
    mailbox: Mailbox
    incidents: World
    changes: Api
    sla: httpx.AsyncClient
    notify: httpx.AsyncClient
    boss: dict[str, str]  # a manager: reads SLA, KPIs and notify's records

    async def get(self, client: httpx.AsyncClient, url: str, **params: Any) -> Any:
        response = await client.get(url, params=params, headers=self.boss)
        assert response.status_code == 200, response.text
        return response.json()

    async def sla_of(self, ticket_id: str) -> dict[str, dict[str, Any]]:
        """The ticket's SLA timers by metric, as the SLA API shows them ({} before the first)."""
        response = await self.sla.get(f"/api/v1/sla/tickets/{ticket_id}", headers=self.boss)
        if response.status_code == 404:
            return {}
        assert response.status_code == 200, response.text
        return {t["metric"]: t for t in response.json()["timers"]}


@pytest.fixture(scope="module")
async def platform(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    signing_key: str,
    auth: Auth,
) -> AsyncIterator[Platform]:
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    env = {
        "ITSM_DEV_SIGNING_KEY": signing_key,  # the test's tokens are valid everywhere
        "ITSM_SLA_TARGETS": f'{{"P1": {{"first_response": {FIRST_RESPONSE}, "resolution": 3600}}}}',
        "ITSM_NOTIFY_SMTP_HOST": "127.0.0.1",  # the test's SMTP server: no mail sink
        "ITSM_NOTIFY_SMTP_PORT": str(smtp.port),
        "ITSM_NOTIFY_SMTP_SECURITY": "plain",
        "ITSM_NOTIFY_SMTP_SENDER": "ITSM <itsm@example.com>",
        "ITSM_NOTIFY_DELIVERY_POLL_SECONDS": "0.2",
    }
    tmp: Path = tmp_path_factory.mktemp("life")
    try:
        async with (
            stack_for(request, tmp, env) as stack,
            stack.client("incidents") as incidents,
            stack.client("changes") as changes,
            stack.client("sla-api") as sla,
            stack.client("notify") as notify,
        ):
            platform = Platform(
                stack, mailbox, World(incidents, auth), Api(changes, auth), sla, notify,
                auth("boss", "manager"),
            )  # fmt: skip
            await configure(platform)
            yield platform
    finally:
        smtp.stop()


async def configure(platform: Platform) -> None:
    """Assignment groups; the on-call ladder for P1 breaches (the lead 10 minutes later); the
    configuration items the changes touch."""
    await platform.incidents.setup_groups()
    policy = ladder("p1-breach", first="oncall", second="lead", second_after=600)
    policy["match"]["priorities"] = ["P1"]
    notify, boss = platform.notify, platform.boss
    response = await notify.post("/api/v1/notify/policies", json=policy, headers=boss)
    assert response.status_code == 201, response.text
    for user, address in (("oncall", ONCALL), ("lead", LEAD)):
        response = await notify.put(
            f"/api/v1/notify/people/{user}", json={"email": address}, headers=boss
        )
        assert response.status_code == 200, response.text


async def completed_change(changes: Api, item: str) -> dict[str, Any]:
    """A normal change on `item`, through assessment, approval and implementation."""
    await changes.call("POST", "/api/v1/configuration-items", "manager", {"name": item}, 201)
    now = datetime.now(UTC)
    change = await changes.create(
        title=f"Resize the {item} volume",
        configuration_items=[item],
        services=["storage"],
        planned_start=(now - timedelta(hours=1)).isoformat(),
        planned_end=(now + timedelta(hours=1)).isoformat(),
    )
    await changes.act(change, "submit", "requester")
    await changes.act(change, "assessment", "manager")
    await changes.act(change, "approvals", "manager", {"decision": "approve"})
    await changes.act(change, "start", "implementer")
    return await changes.act(change, "complete", "implementer", {"outcome": "successful"})


def alertmanager(fingerprint: str, starts: datetime, summary: str, **labels: str) -> dict:
    return {
        "version": "4", "status": "firing", "receiver": "itsm",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "CheckoutErrors", "severity": "critical", **labels},
            "annotations": {"summary": summary},
            "startsAt": starts.isoformat().replace("+00:00", "Z"),
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fingerprint,
        }],
    }  # fmt: skip


async def mails(mailbox: Mailbox, address: str, number: str) -> list[EmailMessage]:
    return mailbox.to(address, number)


def ack_link(mail: EmailMessage, notify_url: str) -> str:
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    found = re.search(re.escape(notify_url) + r"(/api/v1/notify/ack/\S+)", body.get_content())
    assert found, f"no acknowledgement link to {notify_url} in:\n{body.get_content()}"
    return found.group(1)


async def test_an_alert_becomes_an_incident_that_breaches_is_paged_acknowledged_resolved_counted_and_linked(
    platform: Platform,
) -> None:
    stack, incidents, changes = platform.stack, platform.incidents, platform.changes
    run = stack.run_id
    database, service = f"db-{run}", f"payments-{run}"

    # Before the incident: a change on the database, and a pipeline deploying the service.
    change = await completed_change(changes, database)
    bus = KafkaBus(stack.kafka_bootstrap, client_id="e2e-pipeline", start_timeout=15)
    await bus.start()
    try:
        await bus.publish(Topic.INGEST, [deployed(run, service)])
    finally:
        await bus.stop()
    deployment = await eventually(
        lambda: changes.call("GET", f"/api/v1/changes?item={service}", "manager"),
        until=lambda page: [c["status"] for c in page["items"]] == ["completed"],
        timeout=30, what="the deployment recorded as a standard change",
    )  # fmt: skip
    deployment_id = deployment["items"][0]["id"]

    # Alertmanager posts a critical alert naming the change, on the changed database.
    now = datetime.now(UTC)  # after the deployment: it happened before the incident began
    starts = now.replace(microsecond=now.microsecond // 1000 * 1000)  # BSON keeps milliseconds
    summary = f"Checkout failing since {change['number']} ({run})"
    body = alertmanager(f"fp-{run}", starts, summary, instance=database, service=service)
    async with tail(stack.kafka_bootstrap, Topic.INCIDENTS) as incident_topic:
        posted = await incidents.client.post(
            "/api/v1/alerts/alertmanager", json=body, headers=incidents.headers("machine")
        )
        assert posted.status_code == 202, posted.text
        page = await eventually(
            lambda: incidents.client.get(
                BASE, params={"q": run}, headers=incidents.headers("manager")
            ),
            until=lambda r: r.status_code == 200 and len(r.json()["items"]) == 1,
            timeout=30, what="the incident opened from the alert",
        )  # fmt: skip
        incident = page.json()["items"][0]
        iid, number = incident["id"], incident["number"]
        assert incident["priority"] == "P1" and incident["status"] == "new"
        assert incident["configuration_item"] == database and incident["service"] == service
        assert datetime.fromisoformat(incident["opened_at"]) == starts  # the alert's start

        # The SLA clocks run: the API shows the first response counting down.
        sla = await eventually(
            lambda: platform.sla_of(iid),
            until=lambda t: {"first_response", "resolution"} <= set(t),
            timeout=FIRST_RESPONSE, interval=0.2, what="the SLA timers",
        )  # fmt: skip
        first = sla["first_response"]
        assert first["status"] == "running" and not first["breached"], first
        assert 0 < first["remaining_seconds"] <= FIRST_RESPONSE
        assert sla["resolution"]["status"] == "running"

        # Nobody answers: it breaches, and notify pages the on-call person by mail.
        sla = await eventually(
            lambda: platform.sla_of(iid), until=lambda t: t["first_response"]["breached"],
            timeout=FIRST_RESPONSE + 30, interval=0.5, what="the first-response breach",
        )  # fmt: skip
        assert sla["first_response"]["remaining_seconds"] <= 0
        [mail] = await eventually(
            lambda: mails(platform.mailbox, ONCALL, number),
            until=bool, timeout=30, what="the escalation mail to the on-call person",
        )  # fmt: skip
        assert "Escalation level 1" in mail["Subject"] and "[P1]" in mail["Subject"]
        assert summary in mail["Subject"]

        # The signed link in the mail acknowledges the escalation, once.
        link = ack_link(mail, stack.url("notify"))
        acked = await platform.notify.post(link)
        assert acked.status_code == 200, acked.text
        assert (acked.json()["status"], acked.json()["acknowledged_by"]) == (
            "acknowledged",
            "oncall",
        )
        assert (await platform.notify.post(link)).status_code == 409  # single use
        [escalation] = await platform.get(platform.notify, ESCALATIONS, ticket_id=iid)
        assert (escalation["metric"], escalation["status"]) == ("first_response", "acknowledged")

        # An agent takes it, answers the requester and resolves it.
        await incidents.do(iid, "assignment", "manager", {"group": "service-desk"})
        await incidents.do(iid, "replies", "member", {"body": "Rolling back the resize."})
        resolved = await incidents.do(
            iid, "resolve", "member", {"code": "fixed", "notes": "volume restored"}
        )
        assert resolved["status"] == "resolved"

        def of_incident(records: list[Any]) -> list[Any]:
            return [
                decode(KafkaRecord(r.key, r.value, tuple(r.headers)))
                for r in records
                if r.key == iid.encode()
            ]

        records = await incident_topic.collect(
            lambda rs: any(e.type.endswith(".resolved.v1") for e in of_incident(rs)),
            what="the incident's events on Kafka",
        )
    kinds = [e.type.split(".")[2] for e in of_incident(records)]
    assert kinds[0] == "created" and kinds[-1] == "resolved", kinds
    assert [k for k in kinds if k in ("assigned", "replied")] == ["assigned", "replied"], kinds
    assert [e.sequence for e in of_incident(records)] == list(range(1, len(kinds) + 1))

    # The SLA read side: the response came late, the resolution in time.
    sla = await eventually(
        lambda: platform.sla_of(iid), until=lambda t: t["resolution"]["status"] == "met",
        timeout=30, what="the resolution met",
    )  # fmt: skip
    first = sla["first_response"]
    assert (first["status"], first["last_fact"], first["breached"]) == ("breached", "missed", True)

    # Notify: the acknowledged escalation ends with the ticket; the lead was never paged.
    await eventually(
        lambda: platform.get(platform.notify, ESCALATIONS, ticket_id=iid),
        until=lambda escalations: [e["status"] for e in escalations] == ["resolved"],
        timeout=30, what="the escalation settled by the resolution",
    )  # fmt: skip
    deliveries = await platform.get(platform.notify, "/api/v1/notify/deliveries", ticket_id=iid)
    assert [(d["recipient"], d["level"], d["status"]) for d in deliveries["items"]] == [
        ("oncall", 1, "sent")
    ]
    assert platform.mailbox.to(LEAD, number) == []
    assert len(platform.mailbox.to(ONCALL, number)) == 1

    # The KPIs: one P1 opened and resolved, its late response, one breach; both changes done.
    def counted(kpis: dict[str, Any]) -> bool:
        total = kpis["total"]
        return total["resolutions"] == 1 and total["sla_met"] + total["sla_missed"] == 2 and total["changes_completed"] == 2  # fmt: skip

    kpis = await eventually(
        lambda: platform.get(platform.sla, "/api/v1/kpis", granularity="hour"),
        until=counted, timeout=60, interval=0.5, what="the KPIs",
    )  # fmt: skip
    total = kpis["total"]
    assert (total["opened"], total["resolved"], total["backlog"]) == (1, 1, 0)
    assert total["first_responses"] == 1 and total["first_response_mean"] > FIRST_RESPONSE
    assert (total["sla_met"], total["sla_missed"], total["sla_compliance_percent"]) == (1, 1, 50.0)
    assert total["breaches"] == 1
    assert (total["changes_successful"], total["change_success_percent"]) == (2, 100.0)

    # The changes service links the incident to the change it names and the deployment before it.
    async def links() -> list[dict[str, Any]]:
        return [
            await changes.call("GET", f"/api/v1/changes/{change_id}", "manager")
            for change_id in (change["id"], deployment_id)
        ]

    named, suggested = await eventually(
        links, until=lambda found: all(c["caused_incidents"] or c["suggested_incidents"] for c in found),
        timeout=30, what="both links",
    )  # fmt: skip
    assert (named["caused_incidents"], named["suggested_incidents"]) == ([iid], [])
    assert (suggested["caused_incidents"], suggested["suggested_incidents"]) == ([], [iid])


async def test_no_secret_reaches_the_logs_of_the_run(platform: Platform, signing_key: str) -> None:
    """Every process's log of the run above (and of the stack's start) is free of what would
    let a reader in: the token signing key, the acknowledgement-link key, bearer tokens (any
    JWT), and the single-use acknowledgement tokens mailed to people."""
    ack_tokens = [
        ack_link(mail, str(platform.notify.base_url)).rsplit("/", 1)[-1]
        for mail in platform.mailbox.messages
    ]
    secrets = {
        "the dev signing key": signing_key,
        "the ack-link key": platform.stack.env["ITSM_NOTIFY_ACK_LINK_KEY"],
        "the manager's bearer token": platform.boss["Authorization"].split()[1],
        **{f"ack token {n}": token for n, token in enumerate(ack_tokens)},
    }
    assert platform.stack.leaks(secrets) == []
    assert ack_tokens, "the run above mailed acknowledgement links to scan for"
