"""The SLA read API (thin routers: decode, call a handler, encode)."""

from services.sla.api import kpis, stream, timers

# The policies router (services/sla/api/policies.py) joins this list when it is wired.
routers = [timers.router, kpis.router, stream.router]

__all__ = ["routers"]
