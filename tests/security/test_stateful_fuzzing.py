"""Stateful fuzzing: schemathesis chains each service's operations along the links it infers from
the OpenAPI document (an id a response returns feeds the operations that take it: POST
/incidents → GET /incidents/{incident_id} → POST …/assignment → …), so sequences reach objects
that exist and change them step by step, as a caller working a ticket would.

Each service runs in-process over ASGI on the in-memory adapters, as an admin (every step is
allowed, so the sequences get deep). Every response of every step passes the same checks as the
stateless run (tests/security/test_fuzzing.py): no 5xx, a documented status, a documented media
type, a body that validates. A run must follow links (a step whose input came from an earlier
response) and succeed on some of them; the counts are printed. The sequences are random (a
failure message names the operation and the check); ITSM_STATEFUL_EXAMPLES sets the number of
scenarios (default: the suite's time budget).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi

from tests.security.services import SERVICES, Tokens, build_app
from tests.security.test_fuzzing import CHECKS, STREAM_SECONDS, resource_path, takes_if_match
from tests.security.world import PEOPLE, seeded_on_startup

SCENARIOS = int(os.environ.get("ITSM_STATEFUL_EXAMPLES", "25"))
# The app keeps its state between scenarios, so hypothesis may find that a choice it replays no
# longer draws what it drew before (the bundles of ids differ) and stop the run as flaky; the
# loop below then starts another run until SCENARIOS scenarios have been played.
SETTINGS = settings(
    max_examples=SCENARIOS,
    stateful_step_count=8,
    database=None,
    deadline=None,
    phases=[Phase.generate],  # failures are collected, not raised: no shrinking
    suppress_health_check=list(HealthCheck),
)


@dataclass
class StatefulReport:
    service: str
    scenarios: int = 0
    restarts: int = 0  # runs hypothesis stopped as flaky (see SETTINGS)
    steps: int = 0
    linked_steps: int = 0  # inputs taken from an earlier response
    linked_successes: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    violations: dict[tuple[str, str], str] = field(default_factory=dict)


def fuzz_statefully(service: str, signing_key: str) -> StatefulReport:
    report = StatefulReport(service)
    tokens = Tokens(signing_key)
    headers = tokens.headers(*PEOPLE["admin"])
    app = build_app(service, signing_key)
    seeded_on_startup(app, service, tokens, {})  # objects for the list operations to return
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the lifespan
    machine = schema.as_state_machine()
    operations = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    client = asgi.get_client(app)

    class Checked(machine):  # type: ignore[misc,valid-type]
        def setup(self) -> None:
            report.scenarios += 1

        def before_call(self, case: Any) -> None:
            # The admin's token, over whatever Authorization the case generated for the scheme,
            # and the addressed object's current ETag where the operation takes If-Match.
            case.headers = {**(case.headers or {}), **headers}
            current = resource_path(case.operation, operations)
            if takes_if_match(case.operation) and current and case.path_parameters:
                url = current.format(**case.path_parameters)
                etag = client.get(url, headers=headers).headers.get("etag")
                if etag:
                    case.headers["If-Match"] = etag

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"timeout": STREAM_SECONDS} if case.operation.path.endswith("/stream") else {}

        def step(self, input: Any) -> Any:
            linked = input.transition is not None
            output = super().step(input)
            report.steps += 1
            report.linked_steps += linked
            report.linked_successes += linked and output.response.status_code < 300
            report.statuses[output.response.status_code] += 1
            return output

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            for check in CHECKS:
                try:
                    case.validate_response(response, checks=[check], headers=headers)
                except (AssertionError, FailureGroup) as failure:
                    key = (case.operation.label, check.__name__)
                    report.violations.setdefault(key, str(failure)[:2000])

    started = time.perf_counter()
    try:
        while report.scenarios < SCENARIOS:
            try:
                Checked.run(settings=SETTINGS)
            except FlakyStrategyDefinition:
                report.restarts += 1
            if report.restarts > SCENARIOS:
                break
    finally:
        client.close()
        asgi.shutdown_lifespans()
    report.seconds = time.perf_counter() - started
    return report


@pytest.mark.parametrize("service", SERVICES)
def test_chained_operations_find_no_server_error_and_no_response_outside_the_schema(
    service: str, signing_key: str
) -> None:
    report = fuzz_statefully(service, signing_key)
    print(
        f"\n{service}: {report.scenarios} scenarios ({report.restarts} restarts), {report.steps} stateful steps ({report.linked_steps} along links, "
        f"{report.linked_successes} of them 2xx) in {report.seconds:.1f} s, "
        f"statuses: {dict(sorted(report.statuses.items()))}"
    )
    assert report.violations == {}, "\n\n".join(report.violations.values())
    assert report.linked_steps > 0, "no step followed a link: the sequences stayed shallow"
    assert report.linked_successes > 0, "no linked step succeeded"
