"""The incidents HTTP API (thin routers: decode, call a handler, encode)."""

from services.incidents.api import actions, alerts, groups, incidents

routers = [incidents.router, actions.router, groups.router, alerts.router]

__all__ = ["routers"]
