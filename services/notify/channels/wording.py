"""How times read in a notification: "due in 2 hours 5 minutes", "overdue by 12 minutes".
Pure: `now` is always a parameter."""

from __future__ import annotations

from datetime import datetime, timedelta

_MINUTE = 60
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR


def humanize(delta: timedelta) -> str:
    """A duration in at most two units, rounded down: a pager reader wants "1 hour 40 minutes",
    not seconds. The sign is ignored; the caller says whether it is ahead or behind."""
    seconds = int(abs(delta.total_seconds()))
    if seconds < _MINUTE:
        return "less than a minute"
    days, rest = divmod(seconds, _DAY)
    hours, rest = divmod(rest, _HOUR)
    minutes = rest // _MINUTE
    if days:
        units = [(days, "day"), (hours, "hour")]
    elif hours:
        units = [(hours, "hour"), (minutes, "minute")]
    else:
        units = [(minutes, "minute")]
    return " ".join(_plural(n, unit) for n, unit in units if n)


def deadline_wording(deadline: datetime, now: datetime) -> str:
    """Time left before a deadline, or how far past it we are."""
    if deadline > now:
        return f"due in {humanize(deadline - now)}"
    return f"overdue by {humanize(now - deadline)}"


def is_overdue(deadline: datetime, now: datetime) -> bool:
    return deadline <= now


def metric_label(metric: str) -> str:
    """The SLA metric as people say it: "first_response" -> "first response"."""
    return metric.replace("_", " ")


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
