"""Jinja2 templates per notification kind, rendered into a channel-neutral `Message`.

Each kind has a directory under templates/ with `summary.txt` (one line: what happened and how
urgent), `body.txt` and `body.html`; `_subject.txt` and the `_layout.*` files frame them all.
HTML is autoescaped (a ticket title is user input); text is not (it is not HTML). Undefined
variables fail loudly (StrictUndefined) instead of rendering as blanks. An operator can
override any file by putting one with the same path in an override directory.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    select_autoescape,
)

from services.notify.channels.base import Fact, Message
from services.notify.channels.wording import (
    deadline_wording,
    humanize,
    is_overdue,
    metric_label,
)

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"
_MAX_SUBJECT = 200


class Kind(StrEnum):
    """The families of notifications, one template directory each."""

    SLA_WARNING = "sla_warning"  # itsm.sla.warning.v1
    SLA_BREACHED = "sla_breached"  # itsm.sla.breached.v1
    ESCALATION_LEVEL = "escalation_level"  # an escalation policy's level fired
    INCIDENT_P1_OPENED = "incident_p1_opened"  # itsm.incident.created.v1 at P1
    INCIDENT_MAJOR_DECLARED = "incident_major_declared"  # itsm.incident.major_declared.v1
    INCIDENT_ASSIGNED_TO_YOU = "incident_assigned_to_you"  # itsm.incident.assigned.v1


class TemplateInputError(ValueError):
    """The notice lacks what its kind's template needs, or carries an unusable value."""


@dataclass(frozen=True, slots=True)
class Notice:
    """What a template needs to know about one notification for one recipient."""

    kind: Kind
    dedup_key: str
    ticket_id: str
    ticket_number: str
    title: str
    priority: str
    ticket_url: str
    deadline: datetime | None = None  # the SLA target: drives "due in" / "overdue by"
    metric: str | None = None  # "first_response" or "resolution"
    threshold: int | None = None  # an SLA warning: percent of the target elapsed
    level: int | None = None  # an escalation: which level fired (1 = first)
    unacknowledged_since: datetime | None = None  # an escalation: when it started
    recipient_name: str | None = None
    group: str | None = None
    assignee: str | None = None
    service: str | None = None
    ack_url: str | None = None  # a signed single-use acknowledgement link


_REQUIRED: dict[Kind, tuple[str, ...]] = {
    Kind.SLA_WARNING: ("deadline", "metric", "threshold"),
    Kind.SLA_BREACHED: ("deadline", "metric"),
    Kind.ESCALATION_LEVEL: ("level",),
    Kind.INCIDENT_P1_OPENED: (),
    Kind.INCIDENT_MAJOR_DECLARED: (),
    Kind.INCIDENT_ASSIGNED_TO_YOU: ("group",),
}


def validate_notice(notice: Notice) -> None:
    missing = [name for name in _REQUIRED[notice.kind] if getattr(notice, name) is None]
    if missing:
        raise TemplateInputError(f"a {notice.kind} notice needs {', '.join(missing)}")
    for name in ("ticket_url", "ack_url"):
        url = getattr(notice, name)
        if url is not None and urlsplit(url).scheme not in ("https", "http"):
            raise TemplateInputError(f"{name} must be an http(s) URL")
    for name in ("deadline", "unacknowledged_since"):
        moment = getattr(notice, name)
        if moment is not None and moment.tzinfo is None:
            raise TemplateInputError(f"{name} must be timezone-aware")


def build_environment(override_dir: Path | None = None) -> Environment:
    loaders = [FileSystemLoader(override_dir)] if override_dir else []
    environment = Environment(
        loader=ChoiceLoader([*loaders, FileSystemLoader(BUILTIN_TEMPLATES)]),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["humanize"] = humanize
    return environment


class Templates:
    """Renders notices into messages. Build once (at start-up) and reuse: the environment
    caches compiled templates."""

    def __init__(self, override_dir: Path | None = None) -> None:
        self._environment = build_environment(override_dir)

    def render(self, notice: Notice, *, now: datetime) -> Message:
        validate_notice(notice)
        context = template_context(notice, now)
        summary = _one_line(self._render(f"{notice.kind}/summary.txt", context))
        context["summary"] = summary
        subject = _one_line(self._render("_subject.txt", context))[:_MAX_SUBJECT]
        return Message(
            dedup_key=notice.dedup_key,
            kind=notice.kind.value,
            subject=subject,
            headline=summary,
            text=self._render(f"{notice.kind}/body.txt", context),
            html=self._render(f"{notice.kind}/body.html", context),
            ticket_id=notice.ticket_id,
            ticket_number=notice.ticket_number,
            title=_one_line(notice.title),
            priority=notice.priority,
            ticket_url=notice.ticket_url,
            facts=facts_for(notice, now),
            ack_url=notice.ack_url,
        )

    def _render(self, name: str, context: dict[str, Any]) -> str:
        return self._environment.get_template(name).render(context)


def template_context(notice: Notice, now: datetime) -> dict[str, Any]:
    """The variables every template sees: the notice's fields plus the time wording."""
    context: dict[str, Any] = {f.name: getattr(notice, f.name) for f in fields(notice)}
    context["kind"] = notice.kind.value
    context["title"] = _one_line(notice.title)
    context["now"] = now
    context["timing"] = deadline_wording(notice.deadline, now) if notice.deadline else None
    context["overdue"] = bool(notice.deadline and is_overdue(notice.deadline, now))
    context["metric_label"] = metric_label(notice.metric) if notice.metric else None
    since = notice.unacknowledged_since
    context["unacknowledged_for"] = humanize(now - since) if since else None
    return context


def facts_for(notice: Notice, now: datetime) -> tuple[Fact, ...]:
    """The labelled values chat cards show beside the headline."""
    facts = [Fact("Priority", notice.priority)]
    if notice.deadline is not None:
        label = f"{metric_label(notice.metric).capitalize()} SLA" if notice.metric else "SLA"
        facts.append(Fact(label, deadline_wording(notice.deadline, now)))
    if notice.level is not None:
        facts.append(Fact("Escalation level", str(notice.level)))
    if notice.unacknowledged_since is not None:
        facts.append(Fact("Unacknowledged for", humanize(now - notice.unacknowledged_since)))
    for label, value in (
        ("Group", notice.group),
        ("Assignee", notice.assignee),
        ("Service", notice.service),
    ):
        if value:
            facts.append(Fact(label, value))
    return tuple(facts)


def _one_line(text: str) -> str:
    """Collapse all whitespace, line breaks included: a title with CR/LF must not become an
    extra mail header or break a chat heading."""
    return " ".join(text.split())
