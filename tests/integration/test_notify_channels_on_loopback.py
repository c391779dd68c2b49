"""Notify channels against real servers on loopback: an aiosmtpd SMTP server (plain, STARTTLS,
implicit TLS, AUTH) and real HTTP receivers (uvicorn) that verify the webhook signature,
answer errors, or never answer. No broker or database needed."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from services.notify.channels import (
    ChannelTimeouts,
    EmailChannel,
    EmailTarget,
    Kind,
    Message,
    Notice,
    Outcome,
    SignatureRejected,
    SlackChannel,
    SlackTarget,
    SmtpConfig,
    SmtpSecurity,
    TeamsChannel,
    TeamsTarget,
    Templates,
    WebhookChannel,
    WebhookTarget,
    build_http_client,
    verify_signature,
)
from services.notify.channels.email import message_id
from tests.support.apps import free_port, http_server

SMTP_USER = "notify"
SMTP_PASSWORD = "correct-horse-battery"
WEBHOOK_SECRET = "whsec-loopback-0123456789"
SLACK_SECRET_PATH = "services/T0000/B0000/slackSecretToken123"
TEAMS_SECRET_PATH = "workflows/abc/triggers/manual/paths/invoke?sig=teamsSecretSig456"
FAST = ChannelTimeouts(connect=2.0, total=5.0)
IMPATIENT = ChannelTimeouts(connect=0.3, total=0.5)


# --- a message rendered by the real templates ---------------------------------------------


@pytest.fixture(scope="module")
def breach() -> Message:
    now = datetime.now(UTC)
    notice = Notice(
        kind=Kind.SLA_BREACHED,
        dedup_key="0190aaaa-evt:alice@example.com:email",
        ticket_id="0190-inc",
        ticket_number="INC0001042",
        title="Réseau VPN <b>down</b> & flapping",
        priority="P1",
        ticket_url="https://itsm.example.com/incidents/0190-inc",
        deadline=now - timedelta(minutes=12, seconds=5),
        metric="resolution",
        group="Network L2",
        ack_url="https://itsm.example.com/api/v1/acks/tok?sig=abc",
    )
    return Templates().render(notice, now=now)


# --- SMTP: a real aiosmtpd server in its own thread -----------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    login: bytes | None

    @property
    def email(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps what it accepts and refuses the listed recipients."""

    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        tls = session.ssl is not None or server.transport.get_extra_info("cipher") is not None
        self.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.content,
                tls,
                session.login_data,
            )
        )
        return "250 2.0.0 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    # handled=False: aiosmtpd answers 235 / 535 itself
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made for this run."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "itsm-test-smtp")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("smtp-tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_file, key_file)


@contextmanager
def smtp_server(mailbox: Mailbox, **options: Any) -> Iterator[int]:
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def smtp_channel(
    port: int, security: SmtpSecurity = SmtpSecurity.PLAIN, **options: Any
) -> EmailChannel:
    config = SmtpConfig(
        host="127.0.0.1",
        port=port,
        sender="ITSM Notify <notify@itsm.example.com>",
        security=security,
        timeouts=options.pop("timeouts", FAST),
        **options,
    )
    return EmailChannel(config)


ALICE = EmailTarget("alice@example.com", "Alice Martin")


async def test_mail_over_plain_smtp_has_headers_and_both_parts(breach: Message) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        result = await smtp_channel(port).send(breach, ALICE)

    assert result.outcome is Outcome.DELIVERED, result
    assert (result.channel, result.endpoint, result.status) == ("email", f"127.0.0.1:{port}", 250)
    [mail] = mailbox.received
    assert mail.mail_from == "notify@itsm.example.com"
    assert mail.rcpt_tos == ["alice@example.com"]
    assert not mail.tls and mail.login is None
    email = mail.email
    assert email["From"] == "ITSM Notify <notify@itsm.example.com>"
    assert email["To"] == "Alice Martin <alice@example.com>"
    # unfolded and whitespace-normalised: CPython folds before the encoded word for "Réseau"
    assert " ".join(email["Subject"].split()) == (
        "[P1] INC0001042 Resolution SLA breached: overdue by 12 minutes - "
        "Réseau VPN <b>down</b> & flapping"
    )
    assert email["Message-ID"] == message_id(breach.dedup_key, "itsm.example.com")
    assert email["Auto-Submitted"] == "auto-generated"
    text, html = email.get_body(("plain",)), email.get_body(("html",))
    assert text is not None and html is not None
    assert "Resolution SLA: overdue by 12 minutes" in text.get_content()
    assert "Réseau VPN <b>down</b> & flapping" in text.get_content()
    assert "Open the ticket: https://itsm.example.com/incidents/0190-inc" in text.get_content()
    assert "Réseau VPN &lt;b&gt;down&lt;/b&gt; &amp; flapping" in html.get_content()
    assert '<a href="https://itsm.example.com/incidents/0190-inc"' in html.get_content()
    assert b"R\xc3\xa9seau" not in mail.content  # non-ASCII travels 7-bit encoded


async def test_starttls_with_auth_is_encrypted_and_authenticated(
    breach: Message, certificate: Certificate
) -> None:
    mailbox = Mailbox()
    options = {
        "tls_context": certificate.server_context(),
        "require_starttls": True,
        "auth_required": True,
        "authenticator": authenticator,
    }
    with smtp_server(mailbox, **options) as port:
        channel = smtp_channel(
            port,
            SmtpSecurity.STARTTLS,
            username=SMTP_USER,
            password=SMTP_PASSWORD,
            ca_file=str(certificate.cert_file),
        )
        result = await channel.send(breach, ALICE)

    assert result.outcome is Outcome.DELIVERED, result
    [mail] = mailbox.received
    assert mail.tls and mail.login == SMTP_USER.encode()
    assert mail.email["Message-ID"] == message_id(breach.dedup_key, "itsm.example.com")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_implicit_tls_with_auth(breach: Message, certificate: Certificate) -> None:
    mailbox = Mailbox()
    options = {
        "ssl_context": certificate.server_context(),
        "auth_required": True,
        "auth_require_tls": False,  # aiosmtpd only counts STARTTLS as TLS; this is TLS from byte 1
        "authenticator": authenticator,
    }
    with smtp_server(mailbox, **options) as port:
        channel = smtp_channel(
            port,
            SmtpSecurity.TLS,
            username=SMTP_USER,
            password=SMTP_PASSWORD,
            ca_file=str(certificate.cert_file),
        )
        result = await channel.send(breach, ALICE)

    assert result.outcome is Outcome.DELIVERED, result
    [mail] = mailbox.received
    assert mail.tls and mail.login == SMTP_USER.encode()


async def test_a_wrong_password_is_permanent_and_not_reported(
    breach: Message, certificate: Certificate
) -> None:
    mailbox = Mailbox()
    options = {
        "tls_context": certificate.server_context(),
        "auth_required": True,
        "authenticator": authenticator,
    }
    with smtp_server(mailbox, **options) as port:
        channel = smtp_channel(
            port,
            SmtpSecurity.STARTTLS,
            username=SMTP_USER,
            password="wrong-password-here",
            ca_file=str(certificate.cert_file),
        )
        result = await channel.send(breach, ALICE)

    assert result.outcome is Outcome.PERMANENT
    assert result.status == 535 and "authentication failed" in result.detail
    assert "wrong-password-here" not in repr(result) and mailbox.received == []


async def test_an_untrusted_certificate_is_refused_before_any_password_is_sent(
    breach: Message, certificate: Certificate
) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox, tls_context=certificate.server_context()) as port:
        channel = smtp_channel(port, SmtpSecurity.STARTTLS, username="u", password="p-secret")
        result = await channel.send(breach, ALICE)  # no ca_file: the system CAs do not know it

    assert result.outcome is Outcome.PERMANENT, result
    assert "certificate" in result.detail.lower()
    assert mailbox.received == []


@pytest.mark.parametrize(
    ("reply", "outcome", "code"),
    [
        ("550 5.1.1 No such user here", Outcome.PERMANENT, 550),
        ("450 4.2.1 Mailbox busy, try again later", Outcome.TRANSIENT, 450),
    ],
)
async def test_a_refused_recipient_is_classified_by_its_reply_code(
    breach: Message, reply: str, outcome: Outcome, code: int
) -> None:
    mailbox = Mailbox(refuse={"ghost@example.com": reply})
    with smtp_server(mailbox) as port:
        result = await smtp_channel(port).send(breach, EmailTarget("ghost@example.com"))

    assert (result.outcome, result.status) == (outcome, code)
    assert result.detail == f"recipient refused: {reply}"
    assert mailbox.received == []


async def test_a_resend_carries_the_same_message_id(breach: Message) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        channel = smtp_channel(port)
        first = await channel.send(breach, ALICE)
        again = await channel.send(breach, ALICE)
        other = await channel.send(
            replace(breach, dedup_key="0190bbbb-evt:alice@example.com:email"), ALICE
        )

    assert first.delivered and again.delivered and other.delivered
    ids = [mail.email["Message-ID"] for mail in mailbox.received]
    assert ids[0] == ids[1] != ids[2]


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never says a word (no SMTP greeting, no HTTP answer)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # until the client gives up and closes
        finally:
            writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_silent_smtp_server_times_out_as_transient(breach: Message) -> None:
    async with silent_server() as port:
        result = await smtp_channel(port, timeouts=IMPATIENT).send(breach, ALICE)

    assert result.outcome is Outcome.TRANSIENT
    assert "timed out" in result.detail


async def test_a_closed_smtp_port_is_transient(breach: Message) -> None:
    result = await smtp_channel(free_port()).send(breach, ALICE)

    assert result.outcome is Outcome.TRANSIENT
    assert "connection failed" in result.detail


# --- HTTP: one real receiver (uvicorn on loopback) for every webhook kind -----------------


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    base_url: str
    deliveries: list[Delivery]

    def on(self, prefix: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.path.startswith(prefix)]


def receiver_app(deliveries: list[Delivery]) -> FastAPI:
    app = FastAPI()

    async def keep(request: Request) -> bytes:
        body = await request.body()
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        deliveries.append(Delivery(path, dict(request.headers), body))
        return body

    @app.post("/hooks/signed")
    async def signed(request: Request) -> Response:
        body = await request.body()
        try:
            verify_signature(
                WEBHOOK_SECRET, request.headers, body, datetime.now(UTC), timedelta(seconds=60)
            )
        except SignatureRejected as exc:
            return JSONResponse({"refused": str(exc)}, status_code=401)
        await keep(request)
        return Response(status_code=204)

    @app.post("/status/{code}")
    async def status(code: int, request: Request) -> Response:
        await keep(request)
        headers = {"Retry-After": "7"} if code == 429 else {}
        return PlainTextResponse("no_service" if code == 404 else "nope", code, headers)

    @app.post("/slack/{rest:path}")
    async def slack(rest: str, request: Request) -> Response:
        await keep(request)
        return PlainTextResponse("ok")

    @app.post("/slack-gone/{rest:path}")
    async def slack_gone(rest: str, request: Request) -> Response:
        return PlainTextResponse("no_service", 404)

    @app.post("/teams/{rest:path}")
    async def teams(rest: str, request: Request) -> Response:
        await keep(request)
        return Response(status_code=202)

    return app


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    deliveries: list[Delivery] = []
    async with http_server(receiver_app(deliveries)) as client:
        yield Receiver(str(client.base_url).rstrip("/"), deliveries)


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with build_http_client(FAST) as client:
        yield client


async def test_a_signed_webhook_is_verified_and_kept_by_the_receiver(
    receiver: Receiver, http: httpx.AsyncClient, breach: Message
) -> None:
    channel = WebhookChannel(http, FAST)
    target = WebhookTarget(f"{receiver.base_url}/hooks/signed", WEBHOOK_SECRET)

    first = await channel.send(breach, target)
    retry = await channel.send(breach, target)

    assert first.outcome is Outcome.DELIVERED and first.status == 204, first
    assert retry.delivered
    kept = receiver.on("/hooks/signed")[-2:]
    assert [d.headers["x-itsm-delivery"] for d in kept] == [breach.dedup_key] * 2
    assert kept[0].headers["content-type"] == "application/json"
    assert kept[0].headers["x-itsm-signature"].startswith("v1=")
    document = json.loads(kept[0].body)
    assert document["format"] == "itsm.notification.v1"
    assert document["id"] == breach.dedup_key
    assert document["ticket"] == {
        "id": "0190-inc",
        "number": "INC0001042",
        "title": "Réseau VPN <b>down</b> & flapping",
        "priority": "P1",
        "url": "https://itsm.example.com/incidents/0190-inc",
    }
    assert document["ack_url"] == "https://itsm.example.com/api/v1/acks/tok?sig=abc"


async def test_the_receiver_refuses_a_tampered_body_and_a_wrong_secret(
    receiver: Receiver, http: httpx.AsyncClient, breach: Message
) -> None:
    url = f"{receiver.base_url}/hooks/signed"
    assert (
        await WebhookChannel(http, FAST).send(breach, WebhookTarget(url, WEBHOOK_SECRET))
    ).delivered
    genuine = receiver.on("/hooks/signed")[-1]
    signed = {k: v for k, v in genuine.headers.items() if k.startswith("x-itsm-")}

    tampered = genuine.body.replace(b'"priority":"P1"', b'"priority":"P5"')
    answer = await http.post(url, content=tampered, headers=signed)
    assert answer.status_code == 401
    assert answer.json() == {"refused": "signature does not match the body"}

    forged = await WebhookChannel(http, FAST).send(
        breach, WebhookTarget(url, "not-the-receivers-secret")
    )
    assert (forged.outcome, forged.status) == (Outcome.PERMANENT, 401)
    assert "does not match" in forged.detail


async def test_the_receiver_refuses_a_replayed_old_timestamp(
    receiver: Receiver, http: httpx.AsyncClient, breach: Message
) -> None:
    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)
    replayer = WebhookChannel(http, FAST, now=lambda: ten_minutes_ago)
    before = len(receiver.on("/hooks/signed"))

    result = await replayer.send(
        breach, WebhookTarget(f"{receiver.base_url}/hooks/signed", WEBHOOK_SECRET)
    )

    assert (result.outcome, result.status) == (Outcome.PERMANENT, 401)
    assert "outside the tolerance of 60 s" in result.detail
    assert len(receiver.on("/hooks/signed")) == before


@pytest.mark.parametrize(
    ("code", "outcome", "retry_after"),
    [
        (500, Outcome.TRANSIENT, None),
        (503, Outcome.TRANSIENT, None),
        (429, Outcome.TRANSIENT, 7.0),
        (404, Outcome.PERMANENT, None),
        (400, Outcome.PERMANENT, None),
    ],
)
async def test_receiver_errors_are_classified(
    receiver: Receiver,
    http: httpx.AsyncClient,
    breach: Message,
    code: int,
    outcome: Outcome,
    retry_after: float | None,
) -> None:
    target = WebhookTarget(f"{receiver.base_url}/status/{code}", WEBHOOK_SECRET)

    result = await WebhookChannel(http, FAST).send(breach, target)

    assert (result.outcome, result.status, result.retry_after) == (outcome, code, retry_after)
    assert result.detail.startswith(f"HTTP {code}: ")
    assert receiver.on(f"/status/{code}")  # it did reach the receiver


async def test_a_receiver_that_never_answers_times_out_as_transient(
    http: httpx.AsyncClient, breach: Message
) -> None:
    async with silent_server() as port:
        target = WebhookTarget(f"http://127.0.0.1:{port}/hooks/hang", WEBHOOK_SECRET)
        result = await WebhookChannel(http, IMPATIENT).send(breach, target)

    assert result.outcome is Outcome.TRANSIENT
    assert result.status is None and "timed out" in result.detail


async def test_a_closed_port_is_transient(http: httpx.AsyncClient, breach: Message) -> None:
    target = WebhookTarget(f"http://127.0.0.1:{free_port()}/hooks", WEBHOOK_SECRET)

    result = await WebhookChannel(http, FAST).send(breach, target)

    assert result.outcome is Outcome.TRANSIENT
    assert "connection failed" in result.detail


BLOCK_TYPES = {"header", "section", "actions", "context", "divider"}


def assert_block_kit(payload: dict[str, Any]) -> None:
    """The structural rules Slack enforces on an incoming webhook's blocks."""
    assert isinstance(payload["text"], str) and payload["text"]
    blocks = payload["blocks"]
    assert 0 < len(blocks) <= 50
    for block in blocks:
        assert block["type"] in BLOCK_TYPES, block
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert block["text"]["type"] in {"mrkdwn", "plain_text"}
                assert len(block["text"]["text"]) <= 3000
            for item in block.get("fields", []):
                assert item["type"] in {"mrkdwn", "plain_text"} and len(item["text"]) <= 2000
            assert len(block.get("fields", [])) <= 10
        if block["type"] == "actions":
            assert 0 < len(block["elements"]) <= 25
            for button in block["elements"]:
                assert button["type"] == "button"
                assert button["text"]["type"] == "plain_text"
                assert button["url"].startswith("https://")
        if block["type"] == "context":
            assert all(e["type"] in {"mrkdwn", "plain_text", "image"} for e in block["elements"])


async def test_slack_receives_block_kit_and_the_url_stays_secret(
    receiver: Receiver,
    http: httpx.AsyncClient,
    breach: Message,
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = SlackChannel(http, FAST)
    with caplog.at_level(logging.DEBUG):
        result = await channel.send(
            breach, SlackTarget(f"{receiver.base_url}/slack/{SLACK_SECRET_PATH}")
        )
        gone = await channel.send(
            breach, SlackTarget(f"{receiver.base_url}/slack-gone/{SLACK_SECRET_PATH}")
        )

    assert result.outcome is Outcome.DELIVERED and result.status == 200, result
    [delivery] = receiver.on(f"/slack/{SLACK_SECRET_PATH}")
    payload = json.loads(delivery.body)
    assert_block_kit(payload)
    assert (
        payload["blocks"][0]["text"]["text"] == "P1 INC0001042: Réseau VPN <b>down</b> & flapping"
    )
    assert (
        payload["blocks"][1]["text"]["text"] == "*Resolution SLA breached: overdue by 12 minutes*"
    )
    buttons = {b["action_id"]: b["url"] for b in payload["blocks"][3]["elements"]}
    assert buttons == {
        "open_ticket": "https://itsm.example.com/incidents/0190-inc",
        "acknowledge": "https://itsm.example.com/api/v1/acks/tok?sig=abc",
    }
    assert (gone.outcome, gone.status, gone.detail) == (
        Outcome.PERMANENT,
        404,
        "HTTP 404: no_service",
    )
    for outcome in (result, gone):
        assert outcome.endpoint == receiver.base_url.removeprefix("http://")
        assert "slackSecretToken123" not in repr(outcome)
    # every client-side log line (ours, httpx, httpcore); the receiver's access log is its own
    client_side = [r.getMessage() for r in caplog.records if not r.name.startswith("uvicorn")]
    assert client_side and not any("slackSecretToken123" in line for line in client_side)


async def test_teams_receives_an_adaptive_card(
    receiver: Receiver, http: httpx.AsyncClient, breach: Message
) -> None:
    result = await TeamsChannel(http, FAST).send(
        breach, TeamsTarget(f"{receiver.base_url}/teams/{TEAMS_SECRET_PATH}")
    )

    assert result.outcome is Outcome.DELIVERED and result.status == 202, result
    assert "teamsSecretSig456" not in repr(result)
    [delivery] = receiver.on("/teams/")
    payload = json.loads(delivery.body)
    assert payload["type"] == "message"
    [attachment] = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert tuple(int(p) for p in card["version"].split(".")) >= (1, 2)  # RichTextBlock needs 1.2
    assert isinstance(card["body"], list) and card["body"]
    for element in card["body"]:
        assert element["type"] in {"TextBlock", "RichTextBlock", "FactSet"}
        if element["type"] == "RichTextBlock":
            assert all(i["type"] == "TextRun" and i["text"] for i in element["inlines"])
        if element["type"] == "FactSet":
            assert all(set(f) == {"title", "value"} for f in element["facts"])
    texts = [i["text"] for e in card["body"] if e["type"] == "RichTextBlock" for i in e["inlines"]]
    assert "Réseau VPN <b>down</b> & flapping" in texts
    assert "Resolution SLA breached: overdue by 12 minutes" in texts
    facts = {
        f["title"]: f["value"] for e in card["body"] if e["type"] == "FactSet" for f in e["facts"]
    }
    assert facts["Priority"] == "P1" and facts["Resolution SLA"] == "overdue by 12 minutes"
    assert [a["type"] for a in card["actions"]] == ["Action.OpenUrl", "Action.OpenUrl"]
    assert card["actions"][0]["url"] == "https://itsm.example.com/incidents/0190-inc"
