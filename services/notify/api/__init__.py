"""The notify HTTP API (thin routers: decode, call a handler, encode)."""

from services.notify.api import acks, directory, escalations, policies, rotations, subscriptions

routers = [
    policies.router,
    rotations.router,
    directory.router,
    subscriptions.router,
    escalations.router,
    acks.router,
]

__all__ = ["routers"]
