"""The incidents HTTP API (thin routers: decode, call a handler, encode)."""

from services.incidents.api import actions, alerts, groups, incidents
from shared.http.audit_log import audit_log_router

routers = [
    incidents.router,
    actions.router,
    groups.router,
    alerts.router,
    audit_log_router("incidents"),
]

__all__ = ["routers"]
