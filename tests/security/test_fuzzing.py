"""Fuzzing every service's API from its own OpenAPI document with schemathesis 4.

Each service runs in-process over ASGI on the in-memory adapters, with a small world seeded
through its API (tests/security/world.py). For every operation, as an admin (may do anything) and
as a requester (may do little), schemathesis generates valid requests and invalid ones at random
ids, and valid ones at the ids of the seeded objects, sending the object's current ETag where the
operation takes If-Match, so that writes get past the version check and really change state. Every
response must pass:

- not_a_server_error: no 5xx; an exception escaping the app counts as one (it would be a 500);
- status_code_conformance: the status is one the operation documents;
- content_type_conformance: the media type is one documented for that status;
- response_schema_conformance: the body validates against the documented schema (problems too).

Runs are repeatable: hypothesis is derandomized and keeps no example database. The number of
examples per operation, role and variant is ITSM_FUZZ_EXAMPLES (default below: the suite's time
budget on 2 cores); raise it for a deeper run. The counts of the last run are in docs/security.md.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security.services import INFRASTRUCTURE, SERVICES, Tokens, build_app
from tests.security.world import PEOPLE, seeded_on_startup

EXAMPLES = int(os.environ.get("ITSM_FUZZ_EXAMPLES", "8"))
CHECKS: tuple[Callable[..., Any], ...] = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)
FUZZERS = ("admin", "owner")  # personas: an admin, and the requester who owns seeded objects
STREAM_SECONDS = 0.2  # server-sent event streams never end: read this long, then judge
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # failures are collected, not raised: no shrinking
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Report:
    service: str
    cases: int = 0
    seconds: float = 0.0
    server_errors: dict[str, str] = field(default_factory=dict)  # operation -> an example
    violations: dict[tuple[str, str], str] = field(default_factory=dict)  # (operation, check)
    per_operation: Counter[tuple[str, str]] = field(default_factory=Counter)  # (op, persona)
    statuses: Counter[int] = field(default_factory=Counter)


def resource_path(operation: Any, operations: set[tuple[str, str]]) -> str | None:
    """The path template of the GET that reads the object `operation` addresses (its ETag is
    what If-Match must carry): the longest prefix of its path that ends in a parameter."""
    segments = operation.path.split("/")
    for end in range(len(segments), 0, -1):
        prefix = "/".join(segments[:end])
        if prefix.endswith("}") and ("GET", prefix) in operations:
            return prefix
    return None


def takes_if_match(operation: Any) -> bool:
    return any(p.name.lower() == "if-match" for p in operation.headers)


def fuzz_operation(
    report: Report, operation: Any, persona: str, headers: dict[str, str], ids: dict[str, str],
    operations: set[tuple[str, str]], client: Any,
) -> None:  # fmt: skip
    names = [p.name for p in operation.path_parameters]
    variants: list[tuple[GenerationMode, dict[str, str] | None]] = [
        (GenerationMode.POSITIVE, None),
        (GenerationMode.NEGATIVE, None),
    ]
    if names and all(n in ids for n in names):
        variants.append((GenerationMode.POSITIVE, {n: ids[n] for n in names}))
    current = resource_path(operation, operations) if takes_if_match(operation) else None

    for mode, path_parameters in variants:
        fuzz_variant(report, operation, persona, headers, mode, path_parameters, current, client)


def fuzz_variant(
    report: Report, operation: Any, persona: str, headers: dict[str, str], mode: GenerationMode,
    path_parameters: dict[str, str] | None, current: str | None, client: Any,
) -> None:  # fmt: skip
    """`SETTINGS.max_examples` cases of `operation` in `mode`, at `path_parameters` if given
    (with the current ETag of the object at `current`, if the operation takes If-Match)."""
    timeout = {"timeout": STREAM_SECONDS} if operation.path.endswith("/stream") else {}

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    @SETTINGS
    def run(case: Any) -> None:
        if path_parameters and current:
            url = current.format(**path_parameters)
            etag = client.get(url, headers=headers).headers.get("etag")
            if etag:
                case.headers = {**(case.headers or {}), "If-Match": etag}
        report.cases += 1
        report.per_operation[(operation.label, persona)] += 1
        try:
            response = case.call(headers=headers, **timeout)
        except Exception as exc:  # the app raised: a real server answers 500
            report.statuses[500] += 1
            report.server_errors.setdefault(
                operation.label, f"{exc!r}\n{case.as_curl_command(headers=headers)}"
            )
            return
        report.statuses[response.status_code] += 1
        for check in CHECKS:
            try:
                case.validate_response(response, checks=[check], headers=headers)
            except (AssertionError, FailureGroup) as failure:
                key = (operation.label, check.__name__)
                report.violations.setdefault(key, str(failure)[:2000])
                if check is not_a_server_error:
                    report.server_errors.setdefault(operation.label, str(failure)[:2000])

    run()


def fuzz(service: str, signing_key: str) -> Report:
    tokens = Tokens(signing_key)
    app = build_app(service, signing_key)
    ids: dict[str, str] = {}
    seeded_on_startup(app, service, tokens, ids)
    report = Report(service)
    started = time.perf_counter()
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the lifespan
        found = [result.ok() for result in schema.get_all_operations()]
        found = [op for op in found if op.path not in INFRASTRUCTURE]
        operations = {(op.method.upper(), op.path) for op in found}
        with asgi.get_client(app) as client:
            for persona in FUZZERS:
                headers = tokens.headers(*PEOPLE[persona])
                for operation in found:
                    fuzz_operation(report, operation, persona, headers, ids, operations, client)
        report.per_operation.update({(op.label, p): 0 for op in found for p in FUZZERS})
    finally:
        asgi.shutdown_lifespans()
    report.seconds = time.perf_counter() - started
    return report


@pytest.mark.parametrize("service", SERVICES)
def test_fuzzing_finds_no_server_error_and_no_response_outside_the_schema(
    service: str, signing_key: str
) -> None:
    report = fuzz(service, signing_key)
    print(
        f"\n{service}: {report.cases} schemathesis cases in {report.seconds:.1f} s, "
        f"5xx: {sum(n for s, n in report.statuses.items() if s >= 500)}, "
        f"statuses: {dict(sorted(report.statuses.items()))}"
    )
    assert report.server_errors == {}, "\n\n".join(report.server_errors.values())
    assert report.violations == {}, "\n\n".join(report.violations.values())
    unfuzzed = sorted(key for key, n in report.per_operation.items() if n == 0)
    assert unfuzzed == [], f"operations no case reached: {unfuzzed}"
    assert report.statuses[200] + report.statuses[201] > 0, "nothing succeeded: a shallow run"
