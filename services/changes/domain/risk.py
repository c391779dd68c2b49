"""Risk assessment: the questionnaire and the plan, scored by rules, with the reasons shown."""

from __future__ import annotations

from services.changes.domain.model import Change, Risk
from shared.contracts.changes import RiskLevel

MANY_ITEMS = 5
WEIGHTS = {"low": 0, "medium": 1, "high": 3}


def assess_risk(change: Change, *, within_maintenance: bool) -> Risk:
    answers = change.answers
    rules: list[tuple[int, str]] = [
        (
            2,
            f"affects {len(change.configuration_items)} items (more than {MANY_ITEMS})",
        )
        if len(change.configuration_items) > MANY_ITEMS
        else (0, ""),
        (2, "the backout plan has not been tested") if not change.plan.backout_tested else (0, ""),
        (2, "planned outside a maintenance window") if not within_maintenance else (0, ""),
        (WEIGHTS[answers.user_impact], f"{answers.user_impact} impact on users"),
        (WEIGHTS[answers.complexity], f"{answers.complexity} complexity"),
        (1, "not tested in staging") if not answers.tested_in_staging else (0, ""),
        (2, "a similar change failed before") if answers.similar_change_failed_before else (0, ""),
        (1, "emergency change") if change.change_type == "emergency" else (0, ""),
    ]
    score = sum(points for points, _ in rules)
    reasons = tuple(reason for points, reason in rules if points > 0)
    level: RiskLevel = "low" if score <= 2 else "medium" if score <= 5 else "high"
    return Risk(level=level, score=score, reasons=reasons)
