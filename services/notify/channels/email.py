"""E-mail over SMTP with aiosmtplib: plain, STARTTLS or implicit TLS, optional AUTH; a text
and an HTML part; a Message-ID derived from the dedup key, so a resend is recognisable."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from enum import StrEnum

import aiosmtplib
import structlog

from services.notify.channels.base import (
    ChannelTimeouts,
    DeliveryResult,
    Message,
    Outcome,
    classify_smtp_code,
)
from services.notify.channels.posting import utc_now

log = structlog.get_logger(__name__)

# 7bit transfer encoding (quoted-printable or base64 for non-ASCII text) keeps a message
# intact through relays that do not offer 8BITMIME.
_POLICY = policy.default.clone(cte_type="7bit")


class SmtpSecurity(StrEnum):
    PLAIN = "plain"  # no encryption: only for a relay on the same host or network segment
    STARTTLS = "starttls"  # submission, usually port 587
    TLS = "tls"  # implicit TLS, usually port 465


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    sender: str  # "ITSM <itsm@example.com>"
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeouts: ChannelTimeouts = field(default_factory=ChannelTimeouts)
    ca_file: str | None = None  # a private CA that signed the relay's certificate
    message_id_domain: str | None = None  # default: the sender address's domain
    local_hostname: str | None = None  # the EHLO name; default: this host's FQDN

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ValueError("SMTP username and password go together")
        if self.password is not None and self.security is SmtpSecurity.PLAIN:
            raise ValueError("SMTP AUTH needs starttls or tls: a password must not travel plain")
        _address(self.sender)

    @property
    def domain(self) -> str:
        return self.message_id_domain or _address(self.sender).domain


@dataclass(frozen=True, slots=True)
class EmailTarget:
    address: str
    name: str | None = None

    def __post_init__(self) -> None:
        _address(self.address)
        if self.name is not None and ("\r" in self.name or "\n" in self.name):
            raise ValueError("a recipient name must be one line")


def message_id(dedup_key: str, domain: str) -> str:
    """The same dedup key always gives the same Message-ID: a retry after a lost answer is the
    same message to mail servers, clients and archives, not a new one."""
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()[:40]
    return f"<{digest}.notify@{domain}>"


def build_email(
    message: Message, target: EmailTarget, *, sender: str, domain: str, now: datetime
) -> EmailMessage:
    email = EmailMessage(policy=_POLICY)
    email["From"] = sender
    email["To"] = formataddr((target.name, target.address)) if target.name else target.address
    email["Subject"] = " ".join(message.subject.split())
    email["Date"] = format_datetime(now)
    email["Message-ID"] = message_id(message.dedup_key, domain)
    # Every notification about a ticket references one id, so mail clients thread them.
    email["References"] = f"<ticket-{message.ticket_id}@{domain}>"
    # RFC 3834, and Exchange's variant: no out-of-office or bounce chatter back to us.
    email["Auto-Submitted"] = "auto-generated"
    email["X-Auto-Response-Suppress"] = "All"
    email["X-ITSM-Ticket"] = message.ticket_number
    if message.priority == "P1":
        email["Importance"] = "high"
    email.set_content(message.text)
    email.add_alternative(message.html, subtype="html")
    return email


class EmailChannel:
    name = "email"

    def __init__(self, config: SmtpConfig, now: Callable[[], datetime] = utc_now) -> None:
        self._config = config
        self._now = now
        self._tls = (
            ssl.create_default_context(cafile=config.ca_file)
            if config.security is not SmtpSecurity.PLAIN
            else None
        )

    @property
    def endpoint(self) -> str:
        return f"{self._config.host}:{self._config.port}"

    async def send(self, message: Message, target: EmailTarget) -> DeliveryResult:
        config = self._config
        try:
            email = build_email(
                message, target, sender=config.sender, domain=config.domain, now=self._now()
            )
        except ValueError as exc:
            return self._logged(Outcome.PERMANENT, f"cannot build the message: {exc}")
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            local_hostname=config.local_hostname,
            use_tls=config.security is SmtpSecurity.TLS,
            start_tls=config.security is SmtpSecurity.STARTTLS,
            tls_context=self._tls,
            timeout=config.timeouts.total,
        )
        try:
            async with asyncio.timeout(config.timeouts.total):
                # connect covers TCP, implicit TLS, the greeting, STARTTLS and AUTH
                await client.connect(timeout=config.timeouts.connect)
                try:
                    _, reply = await client.send_message(
                        email, sender=_address(config.sender).addr_spec, recipients=[target.address]
                    )
                finally:
                    await _quit_quietly(client)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0]
            return self._logged(
                classify_smtp_code(refusal.code),
                f"recipient refused: {refusal.code} {refusal.message}",
                status=refusal.code,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            return self._logged(
                Outcome.PERMANENT, f"authentication failed: {exc.code}", status=exc.code
            )
        except aiosmtplib.SMTPResponseException as exc:
            return self._logged(
                classify_smtp_code(exc.code), f"{exc.code} {exc.message}", status=exc.code
            )
        except (TimeoutError, aiosmtplib.SMTPTimeoutError) as exc:
            return self._logged(Outcome.TRANSIENT, f"timed out ({type(exc).__name__})")
        except ssl.SSLCertVerificationError as exc:
            # a certificate we do not trust will not become trusted by retrying
            return self._logged(Outcome.PERMANENT, _certificate_problem(exc))
        except aiosmtplib.SMTPNotSupported as exc:
            return self._logged(Outcome.PERMANENT, f"server does not support it: {exc}")
        except (aiosmtplib.SMTPServerDisconnected, OSError) as exc:
            cause = exc.__cause__
            if isinstance(cause, ssl.SSLCertVerificationError):
                return self._logged(Outcome.PERMANENT, _certificate_problem(cause))
            return self._logged(Outcome.TRANSIENT, f"connection failed: {exc}")
        except aiosmtplib.SMTPException as exc:
            return self._logged(Outcome.PERMANENT, str(exc))
        # anything but 250 to DATA would have raised SMTPDataError
        return self._logged(Outcome.DELIVERED, f"accepted: {reply}", status=250)

    def _logged(self, outcome: Outcome, detail: str, status: int | None = None) -> DeliveryResult:
        result = DeliveryResult(outcome, self.name, self.endpoint, detail, status)
        fields = {"channel": self.name, "endpoint": self.endpoint, "status": status}
        if result.delivered:
            log.info("notification delivered", outcome=outcome.value, **fields)
        else:
            log.warning(
                "notification not delivered", outcome=outcome.value, detail=detail, **fields
            )
        return result


async def _quit_quietly(client: aiosmtplib.SMTP) -> None:
    """The message is accepted once DATA is answered; a failing QUIT must not turn that into
    a failure (and a retry, and a duplicate)."""
    try:
        await client.quit()
    except aiosmtplib.SMTPException:
        client.close()


def _certificate_problem(error: ssl.SSLCertVerificationError) -> str:
    return f"TLS certificate rejected: {error.verify_message or error.reason}"


def _address(text: str) -> Address:
    _, addr_spec = parseaddr(text)
    if "@" not in addr_spec or any(c in text for c in "\r\n"):
        raise ValueError(f"not an e-mail address: {text!r}")
    try:
        return Address(addr_spec=addr_spec)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"not an e-mail address: {text!r}") from exc
