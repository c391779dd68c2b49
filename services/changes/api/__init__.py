"""The changes HTTP API (thin routers: decode, call a handler, encode)."""

from services.changes.api import actions, catalog, changes
from shared.http.audit_log import audit_log_router

routers = [changes.router, actions.router, catalog.router, audit_log_router("changes")]

__all__ = ["routers"]
