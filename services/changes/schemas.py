"""HTTP input and output models of the changes API. Inputs forbid unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from services.changes.domain.model import Change
from shared.contracts.changes import ChangeStatus, ChangeType, ImplementationOutcome, RiskLevel
from shared.http.fields import LocalTime, refuse_null, without_default

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=20_000)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2_000)]
Level = Literal["low", "medium", "high"]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanIn(Input):
    implementation: Text = ""
    backout: Text = ""
    test: Text = ""
    backout_tested: bool = False


class RiskAnswersIn(Input):
    user_impact: Level = "low"
    complexity: Level = "low"
    tested_in_staging: bool = True
    similar_change_failed_before: bool = False


class _Window(Input):
    planned_start: AwareDatetime | None = None
    planned_end: AwareDatetime | None = None

    @model_validator(mode="after")
    def ends_after_start(self) -> Any:
        if (self.planned_start is None) != (self.planned_end is None):
            raise ValueError("give both planned_start and planned_end")
        if self.planned_start and self.planned_end and self.planned_end <= self.planned_start:
            raise ValueError("the change ends before it starts (planned_end <= planned_start)")
        return self


class ChangeCreate(_Window):
    title: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""
    description: Text = ""
    change_type: ChangeType
    template: Name | None = Field(None, description="Catalog template (standard changes)")
    implementer: Name | None = None
    services: list[Name] = Field(default_factory=list, max_length=50)
    configuration_items: list[Name] = Field(min_length=1, max_length=200)
    plan: PlanIn = Field(default_factory=PlanIn)
    risk_answers: RiskAnswersIn = Field(default_factory=RiskAnswersIn)

    @model_validator(mode="after")
    def type_needs(self) -> Any:
        if self.change_type == "standard" and not self.template:
            raise ValueError("a standard change needs a template from the catalog")
        if self.change_type != "standard" and not self.title:
            raise ValueError("title is required")
        return self


class ChangeUpdate(_Window):
    """Left out: unchanged. Only the implementer and the window can be cleared with null."""

    title: Name | SkipJsonSchema[None] = Field(None, json_schema_extra=without_default)
    description: Text | SkipJsonSchema[None] = Field(None, json_schema_extra=without_default)
    implementer: Name | None = None
    services: list[Name] | SkipJsonSchema[None] = Field(
        None, max_length=50, json_schema_extra=without_default
    )
    configuration_items: list[Name] | SkipJsonSchema[None] = Field(
        None, min_length=1, max_length=200, json_schema_extra=without_default
    )
    plan: PlanIn | SkipJsonSchema[None] = Field(None, json_schema_extra=without_default)
    risk_answers: RiskAnswersIn | SkipJsonSchema[None] = Field(
        None, json_schema_extra=without_default
    )

    _not_null = field_validator(
        "title", "description", "services", "configuration_items", "plan", "risk_answers",
        mode="before",
    )(refuse_null)  # fmt: skip


class Decision(Input):
    decision: Literal["approve", "reject"]
    comment: Annotated[str, StringConstraints(max_length=2_000)] = ""


class Delegation(Input):
    to: Name


class Completion(Input):
    outcome: ImplementationOutcome
    actual_start: AwareDatetime | None = None
    actual_end: AwareDatetime | None = None

    @model_validator(mode="after")
    def ends_after_start(self) -> Any:
        if self.actual_start and self.actual_end and self.actual_end < self.actual_start:
            raise ValueError("the change ends before it starts (actual_end < actual_start)")
        return self


class ReviewIn(Input):
    summary: Reason
    lessons: Text = ""


class Justification(Input):
    reason: Reason


class RiskRead(BaseModel):
    level: RiskLevel
    score: int
    reasons: list[str]


class ApprovalRead(BaseModel):
    approver: str
    group: str
    decision: str
    comment: str
    at: datetime
    on_behalf_of: str | None


class RequirementRead(BaseModel):
    group: str
    quorum: int


class ChangeRead(BaseModel):
    id: str
    number: str
    title: str
    description: str
    change_type: ChangeType
    status: ChangeStatus
    requester: str
    implementer: str | None
    template: str | None
    services: list[str]
    configuration_items: list[str]
    plan: PlanIn
    planned_start: datetime | None
    planned_end: datetime | None
    risk_answers: RiskAnswersIn
    risk: RiskRead | None
    required_approvals: list[RequirementRead]
    approvals: list[ApprovalRead]
    outcome: ImplementationOutcome | None
    actual_start: datetime | None
    actual_end: datetime | None
    review_required: bool
    review: dict[str, Any] | None
    caused_incidents: list[str]
    suggested_incidents: list[str]
    created_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def of(cls, change: Change) -> ChangeRead:
        copied = {name: getattr(change, name) for name in _COPIED}
        risk = change.risk
        return cls(
            **copied,
            services=list(change.services),
            configuration_items=list(change.configuration_items),
            plan=PlanIn(**vars(change.plan)),
            planned_start=change.window.start if change.window else None,
            planned_end=change.window.end if change.window else None,
            risk_answers=RiskAnswersIn(**vars(change.answers)),
            risk=RiskRead(level=risk.level, score=risk.score, reasons=list(risk.reasons))
            if risk
            else None,
            required_approvals=[
                RequirementRead(group=r.group, quorum=r.quorum) for r in change.requirements
            ],
            approvals=[ApprovalRead(**vars(a)) for a in change.approvals],
            review=vars(change.review) if change.review else None,
            caused_incidents=list(change.caused_incidents),
            suggested_incidents=list(change.suggested_incidents),
        )


_COPIED = (
    "id", "number", "title", "description", "change_type", "status", "requester", "implementer",
    "template", "outcome", "actual_start", "actual_end", "review_required", "created_at",
    "updated_at", "version",
)  # fmt: skip


class TemplateIn(Input):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")]
    title: Name
    implementation: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
    backout: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
    test: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
    services: list[Name] = Field(default_factory=list, max_length=50)


class ItemIn(Input):
    name: Name
    service: Name | None = None


class FreezeIn(Input):
    name: Name
    start: AwareDatetime
    end: AwareDatetime
    services: list[Name] = Field(
        default_factory=list, max_length=50, description="empty: company-wide"
    )

    @model_validator(mode="after")
    def ends_after_start(self) -> Any:
        if self.end <= self.start:
            raise ValueError("the freeze ends before it starts")
        return self


class MaintenanceIn(Input):
    name: Name
    weekday: int = Field(ge=0, le=6, description="0 = Monday")
    start: LocalTime = Field(description="local wall-clock time, e.g. 22:00")
    duration_minutes: int = Field(ge=1, le=7 * 24 * 60)
    zone: Name = Field(description="IANA time zone, e.g. Europe/Berlin")
    services: list[Name] = Field(default_factory=list, max_length=50)

    @field_validator("zone")
    @classmethod
    def known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}") from None
        return zone


class ApprovalGroupIn(Input):
    members: list[Name] = Field(max_length=200)


class Interval(BaseModel):
    start: datetime
    end: datetime


class CalendarChange(Interval):
    id: str
    number: str
    title: str
    status: ChangeStatus
    change_type: ChangeType
    configuration_items: list[str]


class CalendarFreeze(Interval):
    name: str
    services: list[str]


class CalendarMaintenance(Interval):
    name: str
    zone: str
    local_start: str
    services: list[str]


class CalendarRead(BaseModel):
    start: datetime
    end: datetime
    zone: str
    changes: list[CalendarChange]
    freezes: list[CalendarFreeze]
    maintenance: list[CalendarMaintenance]
