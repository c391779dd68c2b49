"""What changes are checked against: standard templates, configuration items, freeze and
maintenance windows, CAB/ECAB membership. Change managers and admins maintain them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, status

from services.changes.api.deps import ChangeManager, Person, Service
from services.changes.domain.model import Window
from services.changes.domain.scheduling import FreezeWindow, MaintenanceWindow
from services.changes.schemas import ApprovalGroupIn, FreezeIn, ItemIn, MaintenanceIn, TemplateIn
from services.changes.store import ApprovalGroup, ConfigurationItem, Template
from shared.http.audit import audited
from shared.http.problems import problem_responses

router = APIRouter(
    prefix="/api/v1",
    tags=["change catalog"],
    responses=problem_responses(401, 403, 409, 422),
    dependencies=[audited("changes.catalog")],  # CAB membership, templates, windows
)
CREATED = status.HTTP_201_CREATED


@router.post("/change-templates", status_code=CREATED, summary="Add a standard change template")
async def add_template(body: TemplateIn, user: ChangeManager, changes: Service) -> TemplateIn:
    template = Template(
        body.name, body.title, body.implementation, body.backout, body.test, tuple(body.services), 1
    )
    await changes.templates.add(template, [])
    return body


@router.get("/change-templates", summary="The standard change catalog")
async def list_templates(user: Person, changes: Service) -> list[dict[str, Any]]:
    return [vars(t) | {"services": list(t.services)} for t in await changes.templates.all()]


@router.post("/configuration-items", status_code=CREATED, summary="Register a configuration item")
async def add_item(body: ItemIn, user: ChangeManager, changes: Service) -> ItemIn:
    await changes.items.add(ConfigurationItem(body.name, body.service, 1), [])
    return body


@router.get("/configuration-items", summary="Known configuration items")
async def list_items(user: Person, changes: Service) -> list[ItemIn]:
    return [ItemIn(name=i.name, service=i.service) for i in await changes.items.all()]


@router.post("/freeze-windows", status_code=CREATED, summary="Declare a freeze (blackout) window")
async def add_freeze(body: FreezeIn, user: ChangeManager, changes: Service) -> FreezeIn:
    await changes.freezes.add(
        FreezeWindow(body.name, Window(body.start, body.end), tuple(body.services)), []
    )
    return body


@router.post(
    "/maintenance-windows", status_code=CREATED, summary="Declare a weekly maintenance window"
)
async def add_maintenance(
    body: MaintenanceIn, user: ChangeManager, changes: Service
) -> MaintenanceIn:
    window = MaintenanceWindow(
        body.name, body.weekday, body.start, timedelta(minutes=body.duration_minutes), body.zone,
        tuple(body.services),
    )  # fmt: skip
    await changes.maintenance.add(window, [])
    return body


@router.put(
    "/approval-groups/{name}", summary="Set the members of CAB, ECAB or another approval group"
)
async def set_approval_group(
    name: str, body: ApprovalGroupIn, user: ChangeManager, changes: Service
) -> dict[str, Any]:
    members = tuple(dict.fromkeys(body.members))
    current = await changes.approval_groups.get(name)
    if current is None:
        await changes.approval_groups.add(ApprovalGroup(name, members, 1), [])
    else:
        await changes.approval_groups.save(
            ApprovalGroup(name, members, current.version + 1), current.version, []
        )
    return {"name": name, "members": list(members)}
