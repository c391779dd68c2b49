"""Microsoft Teams incoming webhook (a Workflows "post to a channel when a webhook request is
received" URL, or a legacy connector URL) carrying an Adaptive Card. The URL is the
credential."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.notify.channels.base import DeliveryResult, Message
from services.notify.channels.posting import JsonPostChannel
from services.notify.channels.webhook import encode_json

ADAPTIVE_CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
ADAPTIVE_CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
ADAPTIVE_CARD_VERSION = "1.4"  # the newest version Teams renders everywhere (desktop, mobile)
_URGENT = {"P1", "P2"}


@dataclass(frozen=True, slots=True)
class TeamsTarget:
    webhook_url: str = field(repr=False)


def _plain(text: str, **style: Any) -> dict[str, Any]:
    """Untrusted text as a TextRun: TextRuns are never parsed as markdown, so a hostile title
    cannot become a link or fake formatting (a TextBlock would parse it)."""
    return {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": text, **style}]}


def adaptive_card(message: Message) -> dict[str, Any]:
    colour = "Attention" if message.priority in _URGENT else "Default"
    actions: list[dict[str, Any]] = [
        {
            "type": "Action.OpenUrl",
            "title": f"Open {message.ticket_number}",
            "url": message.ticket_url,
        }
    ]
    if message.ack_url:
        actions.append({"type": "Action.OpenUrl", "title": "Acknowledge", "url": message.ack_url})
    body: list[dict[str, Any]] = [
        _plain(f"{message.priority} · {message.ticket_number}", weight="Bolder", color=colour),
        _plain(message.title, size="Medium", weight="Bolder"),
        _plain(message.headline),
    ]
    if message.facts:
        body.append(
            {
                "type": "FactSet",
                "facts": [{"title": fact.label, "value": fact.value} for fact in message.facts],
            }
        )
    return {
        "$schema": ADAPTIVE_CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": ADAPTIVE_CARD_VERSION,
        "fallbackText": message.subject,
        "body": body,
        "actions": actions,
        "msteams": {"width": "Full"},
    }


def teams_payload(message: Message) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": ADAPTIVE_CARD_CONTENT_TYPE,
                "contentUrl": None,
                "content": adaptive_card(message),
            }
        ],
    }


class TeamsChannel(JsonPostChannel):
    name = "teams"

    async def send(self, message: Message, target: TeamsTarget) -> DeliveryResult:
        return await self.post(target.webhook_url, encode_json(teams_payload(message)))
