"""The notify HTTP API (thin routers: decode, call a handler, encode)."""

from services.notify.api import acks, directory, escalations, policies, rotations, subscriptions
from shared.http.audit_log import audit_log_router

routers = [
    policies.router,
    rotations.router,
    directory.router,
    subscriptions.router,
    escalations.router,
    acks.router,
    audit_log_router("notify"),
]

__all__ = ["routers"]
