"""The policy catalog the processor measures tickets against.

Until policies are managed (CRUD over the API, versions on a compacted topic every worker
reads), the catalog is built in code: one SLA policy per ticket type and priority on a 24x7
calendar, with the platform's default targets, optionally overridden per priority by settings.
`create_app` takes any `PolicyCatalog`, so a deployment or a test can inject its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import get_args

from services.sla.domain import BusinessCalendar, PolicyCatalog, SlaPolicy
from services.sla.processor.settings import TargetOverride
from shared.contracts.incidents import Priority, TicketType

H = timedelta(hours=1)
M = timedelta(minutes=1)
D = timedelta(days=1)

ALWAYS_OPEN = BusinessCalendar("24x7")

# priority -> (first response, resolution)
DEFAULT_TARGETS: Mapping[Priority, tuple[timedelta, timedelta]] = {
    "P1": (15 * M, 4 * H),
    "P2": (30 * M, 8 * H),
    "P3": (1 * H, 24 * H),
    "P4": (4 * H, 3 * D),
    "P5": (8 * H, 5 * D),
}
_TYPE_NAMES: Mapping[TicketType, str] = {"incident": "incidents", "service_request": "requests"}


def default_catalog(
    overrides: Mapping[Priority, TargetOverride] | None = None,
    *,
    calendar: BusinessCalendar = ALWAYS_OPEN,
    version: int = 1,
) -> PolicyCatalog:
    """One policy per ticket type and priority (`default-incident-p1`, …) on `calendar`."""
    overrides = overrides or {}
    policies = []
    for ticket_type in get_args(TicketType):
        for priority in get_args(Priority):
            defaults = DEFAULT_TARGETS[priority]
            override = overrides.get(priority)
            first, resolution = override.durations(defaults) if override else defaults
            policies.append(
                SlaPolicy(
                    id=f"default-{ticket_type}-{priority.lower()}",
                    version=version,
                    name=f"{priority} {_TYPE_NAMES[ticket_type]}",
                    ticket_type=ticket_type,
                    priority=priority,
                    calendar=calendar,
                    first_response=first,
                    resolution=resolution,
                )
            )
    return PolicyCatalog(sla=tuple(policies))
