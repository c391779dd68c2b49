"""Notify service entry point: `uvicorn services.notify.main:create_app --factory`.

Besides the HTTP API, the process consumes incident and SLA events (one consumer group shared
by the replicas), fires escalation levels as they fall due (the ticker), sends the logged
notifications (the delivery worker) and relays its outbox of escalation and notification facts.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import structlog
from fastapi import FastAPI
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.notify import handlers
from services.notify.api import routers
from services.notify.channels import (
    ChannelTimeouts,
    DeliveryResult,
    EmailChannel,
    Message,
    Outcome,
    SlackChannel,
    SmtpConfig,
    SmtpSecurity,
    TeamsChannel,
    Templates,
    WebhookChannel,
    build_http_client,
)
from services.notify.domain.breaker import BreakerSettings
from services.notify.domain.delivery import RetryPolicy
from services.notify.domain.rate_limit import RateLimit
from services.notify.handlers import Notify
from services.notify.routing import Links
from services.notify.sender import DeliveryRules, DeliveryWorker, Send
from services.notify.ticker import EscalationTicker
from shared.bus.port import Subscription, TopicSpec
from shared.contracts import Envelope, Topic
from shared.contracts.codec import KafkaRecord
from shared.runtime import Runtime, ServiceUnit, service_app
from shared.settings import ServiceSettings
from shared.store.relay import OutboxRelay

log = structlog.get_logger(__name__)
NO_SMTP = "smtp:unconfigured"


class NotifySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ITSM_NOTIFY_", extra="ignore")

    service_name: str = "notify"
    consumer_group: str = Field("notify", pattern=r"^[A-Za-z0-9._-]+$")
    incidents_topic: str = str(Topic.INCIDENTS)
    sla_topic: str = str(Topic.SLA)

    smtp_host: str | None = Field(None, description="Unset: e-mail deliveries fail, saying so")
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_security: SmtpSecurity = SmtpSecurity.STARTTLS
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_sender: str = "ITSM <itsm@localhost>"
    smtp_ca_file: str | None = None

    ack_link_key: SecretStr | None = Field(None, description="HMAC key, at least 32 bytes")
    ack_link_previous_key: SecretStr | None = Field(None, description="Still verifies (rotation)")
    ack_link_ttl_hours: float = Field(24, gt=0, le=24 * 30)
    ticket_link_path: str = "/api/v1/incidents/{ticket_id}"

    connect_timeout_seconds: float = Field(5, gt=0, le=60)  # every outbound call is bounded
    total_timeout_seconds: float = Field(15, gt=0, le=300)
    retry_max_attempts: int = Field(5, ge=1, le=50)
    retry_base_seconds: float = Field(2, gt=0)
    retry_cap_seconds: float = Field(300, gt=0)
    retry_jitter: float = Field(0.5, ge=0, le=1)
    rate_limit_per_hour: int = Field(30, ge=1)
    rate_limit_burst: int = Field(10, ge=1)
    rate_limit_max_delay_seconds: float = Field(3600, ge=0)
    breaker_failure_threshold: int = Field(5, ge=1)
    breaker_cooldown_seconds: float = Field(30, gt=0)
    delivery_poll_seconds: float = Field(1.0, gt=0)
    delivery_concurrency: int = Field(8, ge=1, le=256)
    ticker_resync_seconds: float = Field(30, gt=0)
    # Overrides of one rotation that have not ended (a new one beyond it: 409); of those that
    # have, as many are kept (the oldest are dropped), so on-call work stays bounded.
    max_rotation_overrides: int = Field(200, ge=1, le=10_000)

    def rules(self) -> DeliveryRules:
        return DeliveryRules(
            retry=RetryPolicy(
                max_attempts=self.retry_max_attempts,
                base=timedelta(seconds=self.retry_base_seconds),
                cap=timedelta(seconds=max(self.retry_cap_seconds, self.retry_base_seconds)),
                jitter=self.retry_jitter,
            ),
            rate=RateLimit(
                rate=self.rate_limit_per_hour,
                per=timedelta(hours=1),
                burst=self.rate_limit_burst,
                max_delay=timedelta(seconds=self.rate_limit_max_delay_seconds),
            ),
            breaker=BreakerSettings(
                failure_threshold=self.breaker_failure_threshold,
                cooldown=timedelta(seconds=self.breaker_cooldown_seconds),
            ),
            lease=timedelta(seconds=self.total_timeout_seconds * 4),
        )

    def timeouts(self) -> ChannelTimeouts:
        return ChannelTimeouts(
            connect=min(self.connect_timeout_seconds, self.total_timeout_seconds),
            total=self.total_timeout_seconds,
        )

    def smtp(self) -> SmtpConfig | None:
        if not self.smtp_host:
            return None
        return SmtpConfig(
            host=self.smtp_host,
            port=self.smtp_port,
            sender=self.smtp_sender,
            security=self.smtp_security,
            username=self.smtp_username,
            password=self.smtp_password.get_secret_value() if self.smtp_password else None,
            timeouts=self.timeouts(),
            ca_file=self.smtp_ca_file,
        )


class NoSmtpRelay:
    """E-mail when no relay is configured (embedded mode): each delivery fails permanently with
    a message saying what to set, so the delivery log shows why nothing arrived."""

    name = "email"

    async def send(self, message: Message, target: Any) -> DeliveryResult:
        detail = "no SMTP relay configured: set ITSM_NOTIFY_SMTP_HOST (and _PORT, _SECURITY)"
        return DeliveryResult(Outcome.PERMANENT, self.name, NO_SMTP, detail)


def link_keys(config: NotifySettings, auth_mode: str) -> list[bytes]:
    """The ack-link keys (the first signs). Development without one gets a random key for the
    life of the process; production must configure it."""
    keys = [
        k.get_secret_value().encode()
        for k in (config.ack_link_key, config.ack_link_previous_key)
        if k
    ]
    if keys:
        return keys
    if auth_mode == "oidc":
        raise ValueError("notify needs ITSM_NOTIFY_ACK_LINK_KEY (at least 32 bytes) in production")
    log.warning("notify.ephemeral_ack_link_key", hint="links die with this process")
    return [secrets.token_bytes(32)]


async def build(settings: ServiceSettings, runtime: Runtime) -> ServiceUnit:
    config = settings if isinstance(settings, NotifySettings) else NotifySettings()

    def on_write(name: str, document_id: Any, entries: Any, first: bool) -> None:
        if entries:  # writes without events need no relay pass
            relay.nudge(name, document_id, entries, first)

    notify = Notify.on(runtime.database, on_write)
    relay = OutboxRelay(
        runtime.bus,
        [notify.escalations.collection, notify.deliveries.collection],
        poll_interval=settings.relay_poll_interval,
        batch_size=settings.relay_batch_size,
        name="notify-outbox-relay",
    )
    links = Links(
        base_url=settings.public_base_url,
        ticket_path=config.ticket_link_path,
        keys=link_keys(config, settings.auth_mode),
        ttl=timedelta(hours=config.ack_link_ttl_hours),
    )
    http = build_http_client(config.timeouts())
    smtp = config.smtp()
    email = EmailChannel(smtp) if smtp else NoSmtpRelay()
    senders: dict[str, Send] = {
        "email": email.send,
        "webhook": WebhookChannel(http, config.timeouts()).send,
        "slack": SlackChannel(http, config.timeouts()).send,
        "teams": TeamsChannel(http, config.timeouts()).send,
    }

    async def dead_letter(record: KafkaRecord) -> None:
        await runtime.bus.publish_record(Topic.DEAD_LETTER, record)

    worker = DeliveryWorker(
        notify,
        senders,
        Templates(),
        links,
        config.rules(),
        smtp_endpoint=f"{smtp.host}:{smtp.port}" if smtp else NO_SMTP,
        dead_letter=dead_letter,
        clock=runtime.clock,
        poll_interval=config.delivery_poll_seconds,
        concurrency=config.delivery_concurrency,
    )
    ticker = EscalationTicker(notify, runtime.clock, resync_interval=config.ticker_resync_seconds)
    notify.on_wakeup = ticker.schedule
    notify.on_deliveries = worker.nudge
    subscriptions: list[Subscription] = []

    async def on_incident(envelope: Envelope) -> None:
        await handlers.on_incident_event(notify, envelope, now=runtime.clock())

    async def on_sla(envelope: Envelope) -> None:
        await handlers.on_sla_event(notify, envelope, now=runtime.clock())

    async def start() -> None:
        await notify.ensure_indexes()
        topics = [config.incidents_topic, config.sla_topic]
        await runtime.bus.ensure_topics([TopicSpec(t, settings.topic_partitions) for t in topics])
        await relay.start()
        await ticker.start()
        await worker.start()
        group = config.consumer_group
        subscriptions.append(
            await runtime.bus.subscribe(f"{group}-incidents", [config.incidents_topic], on_incident)
        )
        subscriptions.append(
            await runtime.bus.subscribe(f"{group}-sla", [config.sla_topic], on_sla)
        )

    async def stop() -> None:
        for subscription in subscriptions:
            await subscription.stop()
        subscriptions.clear()
        await worker.stop()
        await ticker.stop()
        await relay.stop()
        await http.aclose()

    return ServiceUnit(
        name="notify",
        state={
            "notify": notify,
            "notify_links": links,
            "notify_ticker": ticker,
            "notify_worker": worker,
            "notify_relay": relay,
            "notify_override_cap": config.max_rotation_overrides,
        },
        start=start,
        stop=stop,
    )


def create_app(settings: NotifySettings | None = None, runtime: Runtime | None = None) -> FastAPI:
    return service_app(
        title="ITSM notify",
        settings=settings or NotifySettings(),
        routers=routers,
        build=build,
        runtime=runtime,
        description="Escalation policies, on-call rotations, subscriptions, acknowledgement and "
        "the delivery log. Errors are RFC 9457 problem+json.",
    )


__all__ = ["NotifySettings", "build", "create_app", "routers"]
