"""The SLA domain: business calendars, versioned SLA/OLA policies, timers and the engine that
drives them from ticket events. Pure: no I/O, and time is always a parameter."""

from services.sla.domain.alerts import due_alerts, next_wakeup, snapshot
from services.sla.domain.calendar import (
    BusinessCalendar,
    NoWorkingTime,
    add_business_time,
    business_seconds_between,
    business_time_between,
    is_working,
    next_working_instant,
    parse_hours,
    working_intervals,
)
from services.sla.domain.engine import apply, apply_record, new_state, replay
from services.sla.domain.model import SlaState, Ticket, TicketEvent, TimerView
from services.sla.domain.policy import (
    FIRST_RESPONSE,
    RESOLUTION,
    OlaPolicy,
    PolicyCatalog,
    PolicyRef,
    SlaPolicy,
    Target,
    ola_metric,
)
from services.sla.domain.timers import TRANSITIONS, Timer, elapsed_at

__all__ = [
    "FIRST_RESPONSE",
    "RESOLUTION",
    "TRANSITIONS",
    "BusinessCalendar",
    "NoWorkingTime",
    "OlaPolicy",
    "PolicyCatalog",
    "PolicyRef",
    "SlaPolicy",
    "SlaState",
    "Target",
    "Ticket",
    "TicketEvent",
    "Timer",
    "TimerView",
    "add_business_time",
    "apply",
    "apply_record",
    "business_seconds_between",
    "business_time_between",
    "due_alerts",
    "elapsed_at",
    "is_working",
    "new_state",
    "next_wakeup",
    "next_working_instant",
    "ola_metric",
    "parse_hours",
    "replay",
    "snapshot",
    "working_intervals",
]
