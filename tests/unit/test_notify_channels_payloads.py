"""Notify channels without a network: failure classification, the e-mail as built, and the
Slack, Teams and webhook payloads' shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import httpx
import pytest

from services.notify.channels.base import (
    Channel,
    ChannelTimeouts,
    Fact,
    Message,
    Outcome,
    classify_http_status,
    classify_smtp_code,
    endpoint_host,
    parse_retry_after,
)
from services.notify.channels.email import (
    EmailChannel,
    EmailTarget,
    SmtpConfig,
    SmtpSecurity,
    build_email,
    message_id,
)
from services.notify.channels.posting import _scrub
from services.notify.channels.slack import SlackChannel, SlackTarget, escape_mrkdwn, slack_payload
from services.notify.channels.teams import TeamsChannel, TeamsTarget, teams_payload
from services.notify.channels.webhook import (
    WebhookChannel,
    WebhookTarget,
    encode_json,
    webhook_payload,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def message(**overrides: object) -> Message:
    fields: dict[str, object] = {
        "dedup_key": "evt-1:alice@example.com:email",
        "kind": "sla_breached",
        "subject": "[P1] INC0001042 Resolution SLA breached: overdue by 12 minutes - VPN drops",
        "headline": "Resolution SLA breached: overdue by 12 minutes",
        "text": "plain body",
        "html": "<p>html body</p>",
        "ticket_id": "0190-inc",
        "ticket_number": "INC0001042",
        "title": "VPN drops",
        "priority": "P1",
        "ticket_url": "https://itsm.example.com/incidents/0190-inc",
        "facts": (Fact("Priority", "P1"), Fact("Resolution SLA", "overdue by 12 minutes")),
        "ack_url": "https://itsm.example.com/acks/tok",
    }
    fields.update(overrides)
    return Message(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (202, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (301, Outcome.PERMANENT),
        (400, Outcome.PERMANENT),
        (401, Outcome.PERMANENT),
        (404, Outcome.PERMANENT),
        (410, Outcome.PERMANENT),
        (408, Outcome.TRANSIENT),
        (429, Outcome.TRANSIENT),
        (500, Outcome.TRANSIENT),
        (502, Outcome.TRANSIENT),
        (503, Outcome.TRANSIENT),
    ],
)
def test_http_statuses_are_sorted_into_retry_or_give_up(status: int, outcome: Outcome) -> None:
    assert classify_http_status(status) is outcome


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (250, Outcome.DELIVERED),
        (421, Outcome.TRANSIENT),
        (450, Outcome.TRANSIENT),
        (452, Outcome.TRANSIENT),
        (535, Outcome.PERMANENT),
        (550, Outcome.PERMANENT),
        (553, Outcome.PERMANENT),
    ],
)
def test_smtp_replies_4yz_are_transient_and_5yz_permanent(code: int, outcome: Outcome) -> None:
    assert classify_smtp_code(code) is outcome


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("7", NOW) == 7.0
    assert parse_retry_after("Mon, 02 Mar 2026 09:01:30 GMT", NOW) == 90.0
    assert parse_retry_after("Mon, 02 Mar 2026 08:00:00 GMT", NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_only_the_host_of_a_url_is_ever_reported() -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"
    assert endpoint_host(url) == "hooks.slack.com"
    assert endpoint_host("http://127.0.0.1:8080/hook?token=abc") == "127.0.0.1:8080"
    assert _scrub(f"failed on {url}", url) == "failed on hooks.slack.com"
    assert "XXXXsecretXXXX" not in _scrub("path services/T000/B000/XXXXsecretXXXX", url)
    query = "https://hooks.example.com?token=abc123"
    assert _scrub("bad token=abc123", query) == "bad [redacted]"
    userinfo = "https://bot:pa55word@hooks.example.com/x"
    assert "pa55word" not in _scrub("auth pa55word refused", userinfo)


def test_timeouts_must_be_positive_and_connect_within_total() -> None:
    with pytest.raises(ValueError, match="0 < connect <= total"):
        ChannelTimeouts(connect=5, total=1)
    with pytest.raises(ValueError):
        ChannelTimeouts(connect=0, total=1)


def test_smtp_config_refuses_a_password_over_plain_smtp_and_hides_it() -> None:
    with pytest.raises(ValueError, match="must not travel plain"):
        SmtpConfig("mail", 25, "itsm@example.com", SmtpSecurity.PLAIN, "u", "p")
    with pytest.raises(ValueError, match="go together"):
        SmtpConfig("mail", 587, "itsm@example.com", username="u")
    with pytest.raises(ValueError, match="not an e-mail address"):
        SmtpConfig("mail", 587, "nobody")
    config = SmtpConfig("mail", 587, "ITSM <itsm@example.com>", username="u", password="hunter22")
    assert "hunter22" not in repr(config)
    assert config.domain == "example.com"


@pytest.mark.parametrize("bad", ["alice", "alice@", "alice@example.com\r\nBcc: x@example.com"])
def test_an_unusable_recipient_address_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an e-mail address"):
        EmailTarget(bad)


def test_the_email_has_both_parts_and_a_message_id_from_the_dedup_key() -> None:
    email = build_email(
        message(),
        EmailTarget("alice@example.com", "Alice Martin"),
        sender="ITSM <itsm@example.com>",
        domain="example.com",
        now=NOW,
    )
    parsed = message_from_bytes(email.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)

    assert parsed["From"] == "ITSM <itsm@example.com>"
    assert parsed["To"] == "Alice Martin <alice@example.com>"
    # a long subject is folded onto a continuation line; unfolded it is the subject
    assert parsed["Subject"].strip() == message().subject
    assert parsed["Message-ID"] == message_id("evt-1:alice@example.com:email", "example.com")
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Importance"] == "high"
    assert parsed["References"] == "<ticket-0190-inc@example.com>"
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == "plain body"
    assert html.get_content().strip() == "<p>html body</p>"


def test_the_message_id_is_stable_per_dedup_key_and_distinct_across_keys() -> None:
    first = message_id("evt-1:alice@example.com:email", "example.com")
    assert first == message_id("evt-1:alice@example.com:email", "example.com")
    assert first != message_id("evt-1:bob@example.com:email", "example.com")
    assert first.startswith("<") and first.endswith("@example.com>")
    assert "alice" not in first  # the address is not exposed through the id


def test_the_webhook_payload_is_the_documented_document() -> None:
    body = json.loads(encode_json(webhook_payload(message())))

    assert body == {
        "format": "itsm.notification.v1",
        "id": "evt-1:alice@example.com:email",
        "kind": "sla_breached",
        "subject": message().subject,
        "headline": "Resolution SLA breached: overdue by 12 minutes",
        "text": "plain body",
        "ticket": {
            "id": "0190-inc",
            "number": "INC0001042",
            "title": "VPN drops",
            "priority": "P1",
            "url": "https://itsm.example.com/incidents/0190-inc",
        },
        "facts": [
            {"label": "Priority", "value": "P1"},
            {"label": "Resolution SLA", "value": "overdue by 12 minutes"},
        ],
        "ack_url": "https://itsm.example.com/acks/tok",
    }


def test_slack_blocks_escape_mentions_and_links_in_user_text() -> None:
    hostile = message(
        title="<!channel> see <https://evil.example|the runbook> & more",
        headline="SLA breached for <!here>",
        facts=(Fact("Group", "<@U123> & co"),),
    )

    payload = slack_payload(hostile)
    dumped = json.dumps(payload)

    assert "<!channel>" not in json.dumps(payload["blocks"][1:])
    assert "<!here>" not in dumped and "<@U123>" not in dumped
    assert "<https://evil.example" not in json.dumps(payload["blocks"][1:])
    assert payload["blocks"][1]["text"]["text"] == "*SLA breached for &lt;!here&gt;*"
    assert payload["blocks"][2]["fields"][0]["text"] == "*Group*\n&lt;@U123&gt; &amp; co"
    # the header is plain_text: Slack shows it verbatim and parses nothing in it
    assert payload["blocks"][0]["text"]["type"] == "plain_text"
    assert escape_mrkdwn("a<b>&c") == "a&lt;b&gt;&amp;c"


def test_slack_header_and_field_limits_are_respected() -> None:
    long_one = message(
        title="x" * 400, facts=tuple(Fact(f"label {i}", "v" * 2500) for i in range(12))
    )
    blocks = slack_payload(long_one)["blocks"]

    assert len(blocks[0]["text"]["text"]) == 150
    assert len(blocks[2]["fields"]) == 10
    assert all(len(f["text"]) <= 2000 for f in blocks[2]["fields"])


def test_teams_card_keeps_untrusted_text_out_of_markdown() -> None:
    card = teams_payload(message(title="[click me](https://evil.example) **now**"))
    content = card["attachments"][0]["content"]

    title_block = content["body"][1]
    assert title_block["type"] == "RichTextBlock"
    assert title_block["inlines"] == [
        {
            "type": "TextRun",
            "text": "[click me](https://evil.example) **now**",
            "size": "Medium",
            "weight": "Bolder",
        }
    ]
    assert content["actions"][0]["url"] == "https://itsm.example.com/incidents/0190-inc"
    assert content["actions"][1] == {
        "type": "Action.OpenUrl",
        "title": "Acknowledge",
        "url": "https://itsm.example.com/acks/tok",
    }


def test_no_ack_link_means_no_ack_button_anywhere() -> None:
    quiet = message(ack_url=None)
    assert [b["action_id"] for b in slack_payload(quiet)["blocks"][3]["elements"]] == [
        "open_ticket"
    ]
    assert len(teams_payload(quiet)["attachments"][0]["content"]["actions"]) == 1


def test_chat_targets_never_show_their_url() -> None:
    slack = SlackTarget("https://hooks.slack.com/services/T0/B0/sekrit")
    teams = TeamsTarget("https://prod.westeurope.logic.azure.com/workflows/1?sig=sekrit")
    assert "sekrit" not in repr(slack) and "sekrit" not in repr(teams)


def test_timeouts_default_to_bounded_values() -> None:
    timeouts = ChannelTimeouts()
    assert 0 < timeouts.connect <= timeouts.total < timedelta(minutes=1).total_seconds()


async def test_every_channel_fits_the_channel_protocol() -> None:
    """Checked by mypy (the annotations) and at run time (the names the delivery log uses)."""
    timeouts = ChannelTimeouts()
    async with httpx.AsyncClient() as http:
        email: Channel[EmailTarget] = EmailChannel(SmtpConfig("mail", 587, "i@example.com"))
        webhook: Channel[WebhookTarget] = WebhookChannel(http, timeouts)
        slack: Channel[SlackTarget] = SlackChannel(http, timeouts)
        teams: Channel[TeamsTarget] = TeamsChannel(http, timeouts)
        assert [c.name for c in (email, webhook, slack, teams)] == [
            "email",
            "webhook",
            "slack",
            "teams",
        ]


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("ftp://files.example.com/hooks/s3cr3t-path", "unsupported URL scheme"),
        ("hooks.slack.com/services/T0/B0/s3cr3t-path", "unsupported URL scheme"),
    ],
)
async def test_an_unusable_url_fails_permanently_without_showing_it(url: str, detail: str) -> None:
    async with httpx.AsyncClient() as http:
        result = await WebhookChannel(http, ChannelTimeouts()).send(
            message(), WebhookTarget(url, "a-secret-of-16-bytes")
        )

    assert result.outcome is Outcome.PERMANENT
    assert detail in result.detail
    assert "s3cr3t" not in repr(result)
