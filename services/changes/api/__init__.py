"""The changes HTTP API (thin routers: decode, call a handler, encode)."""

from services.changes.api import actions, catalog, changes

routers = [changes.router, actions.router, catalog.router]

__all__ = ["routers"]
