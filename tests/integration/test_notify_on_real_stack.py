"""The notify service on the real components: SLA breaches published to Kafka, state in
FerretDB, mail into a real aiosmtpd server and webhooks to a real HTTP receiver on loopback,
the service itself served over real HTTP.

- a breach puts the level-1 mail in the SMTP server's mailbox (and level 2 follows when due);
- a duplicated breach sends one mail;
- acknowledging through the mail's link means level 2 is never sent;
- a receiver answering 500 twice and then 200 gets exactly one successful delivery, logged
  with its attempts, and notification_sent reaches the notify topic;
- a bad signature on an acknowledgement link is refused;
- the escalation shows in the pending list of the person it paged until they acknowledge it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr

from services.notify.channels import SmtpSecurity, verify_signature
from services.notify.main import NotifySettings, create_app
from shared.bus.kafka import KafkaBus
from shared.bus.port import TopicSpec
from shared.contracts import Topic
from shared.contracts.envelope import Envelope
from shared.ids import uuid7
from tests.integration.conftest import scratch_database
from tests.support.apps import free_port, http_server
from tests.support.kafka import tail
from tests.support.notify import Mailbox, breach, ladder
from tests.support.polling import eventually

pytestmark = pytest.mark.infra
SECRET = "whsec-notify-stack-0123456789"
LEVEL_TWO_AFTER = 3.0  # seconds: long enough to acknowledge, short enough for a fast test
ACK_LINK = re.compile(r"https://itsm\.test(/api/v1/notify/ack/\S+)")


@dataclass
class Receiver:
    """A webhook receiver that verifies the signature and fails each delivery twice."""

    failures_each: int = 2
    seen: Counter[str] = field(default_factory=Counter)
    accepted: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            verify_signature(SECRET, request.headers, body, datetime.now(UTC))
            delivery = request.headers["X-ITSM-Delivery"]
            self.seen[delivery] += 1
            if self.seen[delivery] <= self.failures_each:
                return Response(status_code=500)
            self.accepted.append(await request.json())
            return Response(status_code=200)

        return app


@dataclass
class Stack:
    notify: httpx.AsyncClient
    bus: KafkaBus
    sla_topic: str
    mailbox: Mailbox
    receiver: Receiver
    boss: dict[str, str]

    async def breach(self, ticket: str, *, priority: str = "P2", copies: int = 1) -> Envelope:
        event = breach(ticket, datetime.now(UTC), priority=priority)  # type: ignore[arg-type]
        await self.bus.publish(self.sla_topic, [event] * copies)
        return event

    async def mails(self, address: str, ticket: str, count: int = 1) -> list[EmailMessage]:
        async def probe() -> list[EmailMessage]:
            return self.mailbox.to(address, ticket)

        return await eventually(
            probe, until=lambda m: len(m) >= count, timeout=20, what=f"mail to {address}"
        )

    async def deliveries(self, ticket: str) -> list[dict[str, Any]]:
        response = await self.notify.get(
            "/api/v1/notify/deliveries", params={"ticket_id": ticket}, headers=self.boss
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def settled(self, ticket: str, count: int) -> list[dict[str, Any]]:
        """The ticket's delivery log once `count` deliveries have reached a final status."""

        async def probe() -> list[dict[str, Any]]:
            return await self.deliveries(ticket)

        final = ("sent", "failed", "cancelled", "dropped")
        return await eventually(
            probe,
            until=lambda d: len(d) >= count and all(x["status"] in final for x in d),
            timeout=20,
            what=f"{count} settled deliveries of {ticket}",
        )


@pytest.fixture(scope="module")
async def stack(
    signing_key: str, mint: Callable[..., str], mongo_url: str, kafka_bootstrap: str
) -> AsyncIterator[Stack]:
    unique = uuid7().replace("-", "")[-12:]
    mailbox, receiver = Mailbox(), Receiver()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    bus = KafkaBus(kafka_bootstrap, client_id=f"tests-notify-{unique}", start_timeout=10)
    await bus.start()
    sla_topic = f"test.notify.sla.{unique}"
    await bus.ensure_topics([TopicSpec(sla_topic, 3)])
    try:
        async with scratch_database(mongo_url) as database, http_server(receiver.app()) as hook:
            settings = NotifySettings(
                mongo_url=mongo_url, mongo_database=database.name, kafka_bootstrap=kafka_bootstrap,
                topic_partitions=3, consumer_group=f"notify-{unique}",
                incidents_topic=f"test.notify.incidents.{unique}", sla_topic=sla_topic,
                auth_mode="dev", dev_signing_key=SecretStr(signing_key), log_json=False,
                public_base_url="https://itsm.test", ack_link_key=SecretStr("k" * 32),
                smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security=SmtpSecurity.PLAIN,
                smtp_sender="ITSM <itsm@example.com>", retry_base_seconds=0.05,
                retry_cap_seconds=0.2, relay_poll_interval=0.5, delivery_poll_seconds=0.2,
                connect_timeout_seconds=2, total_timeout_seconds=5,
            )  # fmt: skip
            async with http_server(create_app(settings)) as notify:
                boss = {"Authorization": f"Bearer {mint('boss', 'manager')}"}
                stack = Stack(notify, bus, sla_topic, mailbox, receiver, boss)
                await configure(stack, str(hook.base_url))
                yield stack
    finally:
        await bus.stop()
        smtp.stop()


async def configure(stack: Stack, hook_url: str) -> None:
    """P2 breaches page alice by mail, then the lead; P3 breaches call hooky's webhook."""
    client, boss = stack.notify, stack.boss
    mail = ladder("mail-ladder", second_after=LEVEL_TWO_AFTER)
    mail["match"]["priorities"] = ["P2"]
    hook = ladder("hook-ladder", first="hooky", channels=("webhook",))
    hook["match"]["priorities"] = ["P3"]
    hook["levels"] = hook["levels"][:1]
    for body in (mail, hook):
        response = await client.post("/api/v1/notify/policies", json=body, headers=boss)
        assert response.status_code == 201, response.text
    people = {
        "alice": {"email": "alice@example.com", "name": "Alice"},
        "lead": {"email": "lead@example.com"},
        "hooky": {"webhook": {"url": f"{hook_url}/hook", "secret": SECRET}},
    }
    for user, entry in people.items():
        response = await client.put(f"/api/v1/notify/people/{user}", json=entry, headers=boss)
        assert response.status_code == 200, response.text


async def test_a_breach_mails_level_one_once_even_when_duplicated_then_level_two(
    stack: Stack,
) -> None:
    ticket = f"INC-{uuid7()}"
    await stack.breach(ticket, copies=2)  # the same event twice: a redelivery
    [first] = await stack.mails("alice@example.com", ticket)
    assert "Escalation level 1" in first["Subject"] and first["From"] == "ITSM <itsm@example.com>"
    await stack.mails("lead@example.com", ticket)  # level 2, after its delay
    assert len(stack.mailbox.to("alice@example.com", ticket)) == 1
    logged = await stack.settled(ticket, 2)
    assert [(d["recipient"], d["level"], d["status"]) for d in logged] == [
        ("alice", 1, "sent"), ("lead", 2, "sent"),
    ]  # fmt: skip


async def test_acknowledging_by_the_mailed_link_means_level_two_is_never_sent(
    stack: Stack,
) -> None:
    acked, control = f"INC-{uuid7()}", f"INC-{uuid7()}"
    await stack.breach(acked)
    await stack.breach(control)
    [mail] = await stack.mails("alice@example.com", acked)
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None
    match = ACK_LINK.search(text.get_content())
    assert match, "the level-1 mail carries an acknowledgement link"
    response = await stack.notify.post(match.group(1))
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["acknowledged_by"]) == (
        "acknowledged", "alice",
    )  # fmt: skip
    await stack.mails("lead@example.com", control)  # level 2 fell due for both tickets
    assert stack.mailbox.to("lead@example.com", acked) == []
    assert [d["recipient"] for d in await stack.settled(acked, 1)] == ["alice"]


async def test_a_receiver_failing_twice_gets_one_delivery_logged_with_its_attempts(
    stack: Stack, kafka_bootstrap: str
) -> None:
    ticket = f"INC-{uuid7()}"
    async with tail(kafka_bootstrap, Topic.NOTIFY) as facts:
        await stack.breach(ticket, priority="P3")

        [delivery] = await stack.settled(ticket, 1)
        assert delivery["status"] == "sent"
        assert [a["outcome"] for a in delivery["attempts"]] == ["transient", "transient", "success"]
        assert delivery["attempts"][0]["detail"].startswith("HTTP 500")
        accepted = [p for p in stack.receiver.accepted if p["ticket"]["id"] == ticket]
        assert len(accepted) == 1 and accepted[0]["id"] == delivery["key"]

        def sent(records: list[Any]) -> list[Any]:
            return [
                r for r in records
                if r.key == delivery["key"].encode()
                and dict(r.headers).get("ce_type") == b"itsm.notify.notification_sent.v1"
            ]  # fmt: skip

        records = await facts.collect(lambda rs: bool(sent(rs)), what="notification_sent")
        assert b'"attempts":3' in sent(records)[0].value.replace(b" ", b"")


async def test_a_bad_signature_on_an_acknowledgement_link_is_refused(stack: Stack) -> None:
    ticket = f"INC-{uuid7()}"
    await stack.breach(ticket)
    [mail] = await stack.mails("alice@example.com", ticket)
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None
    match = ACK_LINK.search(text.get_content())
    assert match
    path = match.group(1)
    forged = path[:-2] + ("AA" if not path.endswith("AA") else "BB")
    response = await stack.notify.post(forged)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "the acknowledgement link's signature is invalid"
    escalations = await stack.notify.get(
        "/api/v1/notify/escalations", params={"ticket_id": ticket}, headers=stack.boss
    )
    assert escalations.json()[0]["status"] in ("notified", "exhausted")


async def test_a_paged_person_finds_the_escalation_pending_until_they_acknowledge_it(
    stack: Stack, mint: Callable[..., str]
) -> None:
    ticket = f"INC-{uuid7()}"
    alice = {"Authorization": f"Bearer {mint('alice', 'agent')}"}
    bob = {"Authorization": f"Bearer {mint('bob', 'agent')}"}

    async def pending(headers: dict[str, str]) -> list[dict[str, Any]]:
        response = await stack.notify.get(
            "/api/v1/notify/escalations/pending", params={"limit": 100}, headers=headers
        )
        assert response.status_code == 200, response.text
        return [e for e in response.json()["items"] if e["ticket_id"] == ticket]

    await stack.breach(ticket)
    [escalation] = await eventually(lambda: pending(alice), timeout=20, what="alice's pending")
    assert escalation["status"] in ("notified", "exhausted") and "alice" in escalation["notified"]
    assert await pending(bob) == []  # never paged
    assert [e["id"] for e in await pending(stack.boss)] == [escalation["id"]]  # managers: all
    acked = await stack.notify.post(
        f"/api/v1/notify/escalations/{escalation['id']}/acknowledgement", headers=alice
    )
    assert acked.status_code == 200, acked.text
    assert await pending(alice) == [] and await pending(stack.boss) == []
