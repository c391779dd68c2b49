"""Notify's delivery channels: e-mail (SMTP), signed webhooks, Slack and Microsoft Teams
incoming webhooks, and the Jinja2 templates that render a notice into a `Message`.

A channel takes a rendered `Message` and a target and returns a classified `DeliveryResult`
(delivered / transient / permanent); retries, dedup and rate limits belong to the caller.
"""

from services.notify.channels.base import (
    Channel,
    ChannelTimeouts,
    DeliveryResult,
    Fact,
    Message,
    Outcome,
)
from services.notify.channels.email import EmailChannel, EmailTarget, SmtpConfig, SmtpSecurity
from services.notify.channels.posting import build_http_client
from services.notify.channels.slack import SlackChannel, SlackTarget
from services.notify.channels.teams import TeamsChannel, TeamsTarget
from services.notify.channels.templates import Kind, Notice, TemplateInputError, Templates
from services.notify.channels.webhook import (
    SignatureRejected,
    WebhookChannel,
    WebhookTarget,
    verify_signature,
)

__all__ = [
    "Channel",
    "ChannelTimeouts",
    "DeliveryResult",
    "EmailChannel",
    "EmailTarget",
    "Fact",
    "Kind",
    "Message",
    "Notice",
    "Outcome",
    "SignatureRejected",
    "SlackChannel",
    "SlackTarget",
    "SmtpConfig",
    "SmtpSecurity",
    "TeamsChannel",
    "TeamsTarget",
    "TemplateInputError",
    "Templates",
    "WebhookChannel",
    "WebhookTarget",
    "build_http_client",
    "verify_signature",
]
