"""Slack incoming webhook with Block Kit blocks. The webhook URL is the credential."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.notify.channels.base import DeliveryResult, Message
from services.notify.channels.posting import JsonPostChannel
from services.notify.channels.webhook import encode_json

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks)
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELDS_MAX = 10
FIELD_TEXT_MAX = 2000


@dataclass(frozen=True, slots=True)
class SlackTarget:
    webhook_url: str = field(repr=False)  # https://hooks.slack.com/services/T…/B…/<secret>


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters: without this a ticket title could carry
    `<!channel>` (pinging everyone) or `<https://evil|a harmless label>`."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(message: Message) -> dict[str, Any]:
    heading = _truncate(f"{message.priority} {message.ticket_number}: {message.title}", HEADER_MAX)
    buttons: list[dict[str, Any]] = [
        {
            "type": "button",
            "action_id": "open_ticket",
            "text": {"type": "plain_text", "text": f"Open {message.ticket_number}"},
            "url": message.ticket_url,
            "style": "primary",
        }
    ]
    if message.ack_url:
        buttons.append(
            {
                "type": "button",
                "action_id": "acknowledge",
                "text": {"type": "plain_text", "text": "Acknowledge"},
                "url": message.ack_url,
            }
        )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": heading, "emoji": False}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _truncate(f"*{escape_mrkdwn(message.headline)}*", SECTION_TEXT_MAX),
            },
        },
    ]
    if message.facts:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": _truncate(
                            f"*{escape_mrkdwn(fact.label)}*\n{escape_mrkdwn(fact.value)}",
                            FIELD_TEXT_MAX,
                        ),
                    }
                    for fact in message.facts[:FIELDS_MAX]
                ],
            }
        )
    blocks.append({"type": "actions", "elements": buttons})
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"ITSM notification `{message.kind}`"}],
        }
    )
    return {
        # the fallback shown in push notifications and by clients that cannot render blocks
        "text": escape_mrkdwn(message.subject),
        "blocks": blocks,
        "unfurl_links": False,
        "unfurl_media": False,
    }


class SlackChannel(JsonPostChannel):
    name = "slack"

    async def send(self, message: Message, target: SlackTarget) -> DeliveryResult:
        return await self.post(target.webhook_url, encode_json(slack_payload(message)))


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
