"""Notify templates: every kind renders, hostile input is escaped, times read right."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from services.notify.channels.templates import Kind, Notice, TemplateInputError, Templates
from services.notify.channels.wording import deadline_wording, humanize

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOSTILE = (
    'VPN <script>alert("x")</script> & <img src=x onerror=alert(1)>\r\nBcc: victim@example.com'
)


def notice(kind: Kind, **overrides: object) -> Notice:
    base = Notice(
        kind=kind,
        dedup_key="evt-1:alice@example.com:email",
        ticket_id="0190-inc",
        ticket_number="INC0001042",
        title="VPN drops every 10 minutes",
        priority="P1",
        ticket_url="https://itsm.example.com/incidents/0190-inc",
        deadline=NOW + timedelta(minutes=25),
        metric="resolution",
        threshold=80,
        level=2,
        unacknowledged_since=NOW - timedelta(minutes=15),
        recipient_name="Alice",
        group="Network L2",
        service="vpn",
        ack_url="https://itsm.example.com/api/v1/acks/tok?sig=abc&exp=1",
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates()


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        (timedelta(seconds=59), "less than a minute"),
        (timedelta(minutes=1), "1 minute"),
        (timedelta(minutes=45, seconds=59), "45 minutes"),
        (timedelta(hours=1), "1 hour"),
        (timedelta(hours=2, minutes=5), "2 hours 5 minutes"),
        (timedelta(days=1, minutes=30), "1 day"),
        (timedelta(days=3, hours=4, minutes=59), "3 days 4 hours"),
        (timedelta(minutes=-12), "12 minutes"),
    ],
)
def test_durations_read_in_at_most_two_units(delta: timedelta, words: str) -> None:
    assert humanize(delta) == words


def test_deadline_wording_says_due_in_before_and_overdue_by_after() -> None:
    assert deadline_wording(NOW + timedelta(hours=1, minutes=5), NOW) == "due in 1 hour 5 minutes"
    assert deadline_wording(NOW - timedelta(minutes=12), NOW) == "overdue by 12 minutes"
    assert deadline_wording(NOW, NOW) == "overdue by less than a minute"


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_renders_link_priority_and_time(templates: Templates, kind: Kind) -> None:
    message = templates.render(notice(kind), now=NOW)

    assert message.kind == kind.value
    assert message.dedup_key == "evt-1:alice@example.com:email"
    for part in (message.text, message.html):
        assert "https://itsm.example.com/incidents/0190-inc" in part
        assert "INC0001042" in part
        assert "P1" in part
        assert "due in 25 minutes" in part
    assert message.subject.startswith("[P1] INC0001042 ")
    assert message.subject.endswith("VPN drops every 10 minutes")
    assert message.headline in message.subject
    assert "\n" not in message.subject and "\n" not in message.headline
    assert message.html.lstrip().startswith("<!DOCTYPE html>")
    assert "Hello Alice," in message.text
    assert ("Priority", "P1") in [(f.label, f.value) for f in message.facts]


@pytest.mark.parametrize(
    ("kind", "overrides", "headline"),
    [
        (Kind.SLA_WARNING, {}, "Resolution SLA at 80%: due in 25 minutes"),
        (
            Kind.SLA_BREACHED,
            {"deadline": NOW - timedelta(minutes=5)},
            "Resolution SLA breached: overdue by 5 minutes",
        ),
        (
            Kind.ESCALATION_LEVEL,
            {},
            "Escalation level 2: unacknowledged for 15 minutes, due in 25 minutes",
        ),
        (Kind.INCIDENT_P1_OPENED, {}, "P1 incident opened, resolution due in 25 minutes"),
        (
            Kind.INCIDENT_MAJOR_DECLARED,
            {"deadline": NOW + timedelta(hours=3, minutes=59, seconds=59)},
            "Major incident declared, resolution due in 3 hours 59 minutes",
        ),
        (
            Kind.INCIDENT_ASSIGNED_TO_YOU,
            {"metric": "first_response"},
            "Assigned to you in Network L2, first response due in 25 minutes",
        ),
    ],
)
def test_each_kind_has_its_own_headline(
    templates: Templates, kind: Kind, overrides: dict[str, object], headline: str
) -> None:
    assert templates.render(notice(kind, **overrides), now=NOW).headline == headline


def test_a_breach_reads_overdue_and_is_marked_in_red(templates: Templates) -> None:
    breached = notice(Kind.SLA_BREACHED, deadline=NOW - timedelta(hours=1, minutes=3))

    message = templates.render(breached, now=NOW)

    assert message.headline == "Resolution SLA breached: overdue by 1 hour 3 minutes"
    assert "overdue by 1 hour 3 minutes" in message.text
    assert 'style="color: #b91c1c; font-weight: bold;">overdue by 1 hour 3 minutes<' in message.html
    assert ("Resolution SLA", "overdue by 1 hour 3 minutes") in [
        (f.label, f.value) for f in message.facts
    ]


def test_first_response_metric_is_worded_for_people(templates: Templates) -> None:
    message = templates.render(notice(Kind.SLA_WARNING, metric="first_response"), now=NOW)
    assert message.headline == "First response SLA at 80%: due in 25 minutes"


def test_html_escapes_a_hostile_title_and_text_keeps_it_verbatim(templates: Templates) -> None:
    message = templates.render(notice(Kind.SLA_BREACHED, title=HOSTILE), now=NOW)

    assert "<script" not in message.html and "<img" not in message.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;img" in message.html
    # plain text is not HTML: escaping it would show "&lt;" to the reader
    assert '<script>alert("x")</script>' in message.text
    # a CR/LF in the title cannot smuggle a header into the subject
    assert "\r" not in message.subject and "\n" not in message.subject
    assert message.subject.endswith("onerror=alert(1)> Bcc: victim@example.com")
    assert (
        message.title
        == 'VPN <script>alert("x")</script> & <img src=x onerror=alert(1)> Bcc: victim@example.com'
    )


def test_hostile_names_and_links_are_escaped_in_attributes(templates: Templates) -> None:
    message = templates.render(
        notice(Kind.INCIDENT_ASSIGNED_TO_YOU, group='"><b>L2</b>', recipient_name="<i>Al</i>"),
        now=NOW,
    )
    assert "<b>L2</b>" not in message.html and "<i>Al</i>" not in message.html
    assert "&#34;&gt;&lt;b&gt;L2&lt;/b&gt;" in message.html
    assert 'href="https://itsm.example.com/api/v1/acks/tok?sig=abc&amp;exp=1"' in message.html


def test_without_deadline_or_ack_link_the_lines_are_left_out(templates: Templates) -> None:
    bare = notice(
        Kind.INCIDENT_MAJOR_DECLARED,
        deadline=None,
        metric=None,
        ack_url=None,
        recipient_name=None,
        group=None,
        service=None,
        level=None,
        unacknowledged_since=None,
    )

    message = templates.render(bare, now=NOW)

    assert message.headline == "Major incident declared"
    assert "SLA" not in message.text and "Acknowledge" not in message.text
    assert "Acknowledge" not in message.html
    assert "Hello," in message.text
    assert [f.label for f in message.facts] == ["Priority"]


@pytest.mark.parametrize(
    ("kind", "missing", "needs"),
    [
        (Kind.SLA_WARNING, {"threshold": None}, "threshold"),
        (Kind.SLA_BREACHED, {"deadline": None, "metric": None}, "deadline, metric"),
        (Kind.ESCALATION_LEVEL, {"level": None}, "level"),
        (Kind.INCIDENT_ASSIGNED_TO_YOU, {"group": None}, "group"),
    ],
)
def test_a_notice_missing_what_its_kind_needs_is_refused(
    templates: Templates, kind: Kind, missing: dict[str, object], needs: str
) -> None:
    with pytest.raises(TemplateInputError, match=f"a {kind} notice needs {needs}"):
        templates.render(notice(kind, **missing), now=NOW)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("ticket_url", "javascript:alert(1)", "ticket_url must be an http"),
        ("ack_url", "data:text/html,<b>", "ack_url must be an http"),
        ("deadline", datetime(2026, 3, 2, 9, 30), "deadline must be timezone-aware"),
    ],
)
def test_unsafe_links_and_naive_times_are_refused(
    templates: Templates, field: str, value: object, error: str
) -> None:
    with pytest.raises(TemplateInputError, match=error):
        templates.render(notice(Kind.SLA_WARNING, **{field: value}), now=NOW)


def test_an_operator_override_replaces_one_file_and_undefined_names_fail(tmp_path: Path) -> None:
    (tmp_path / "sla_breached").mkdir()
    (tmp_path / "sla_breached" / "summary.txt").write_text("BREACH {{ ticket_number }}\n")
    custom = Templates(override_dir=tmp_path)

    message = custom.render(notice(Kind.SLA_BREACHED), now=NOW)
    assert message.headline == "BREACH INC0001042"
    assert "The resolution target was missed" in message.text  # body still the built-in one

    (tmp_path / "sla_warning").mkdir()
    (tmp_path / "sla_warning" / "summary.txt").write_text("{{ no_such_variable }}\n")
    with pytest.raises(UndefinedError, match="no_such_variable"):
        Templates(override_dir=tmp_path).render(notice(Kind.SLA_WARNING), now=NOW)
