"""Request dependencies of the notify API, and who may do what."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.notify.handlers import Notify
from services.notify.routing import Links
from shared.auth import Principal, Role, require_roles

# Managers and admins run the on-call arrangements; the staff who work tickets read them.
MANAGING = (Role.MANAGER, Role.ADMIN)
STAFF = (Role.AGENT, Role.CHANGE_MANAGER, Role.MANAGER, Role.ADMIN)


async def get_notify(request: Request) -> Notify:
    notify: Notify = request.app.state.notify
    return notify


async def get_links(request: Request) -> Links:
    links: Links = request.app.state.notify_links
    return links


Service = Annotated[Notify, Depends(get_notify)]
AckLinks = Annotated[Links, Depends(get_links)]
Manager = Annotated[Principal, Depends(require_roles(*MANAGING))]
Staff = Annotated[Principal, Depends(require_roles(*STAFF))]


def manages(user: Principal) -> bool:
    return user.has_any(frozenset(MANAGING))
