"""The OpenAPI document names every problem a route can answer, in the form it is answered.

Routes document their own problems (`problem_responses(...)`: 404, 409, ...). What the platform's
plumbing adds to every route is documented here, from what the route depends on, so that no route
can forget it: a body that is not JSON text is 400 and one over the size limit 413; an `If-Match`
that is stale is 412 and one that is no ETag of the API (or missing, where required) is 428; any
route but the probes may be rate limited (429). Every
error is RFC 9457 problem+json (never FastAPI's default JSON validation error), described by one
`Problem` schema that response validation (schemathesis in the tests) checks bodies against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from shared.http.etag import if_match, required_if_match
from shared.http.problems import PROBLEM_JSON
from shared.http.ratelimit import EXEMPT_PATHS

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; some problems carry more members (e.g. `errors`).",
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "422: each invalid input, by location",
            "items": {
                "type": "object",
                "properties": {
                    "location": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# Every API route may answer 429 (the per-client rate limit); probes are exempt.
RATE_LIMITED = 429
BODY_PROBLEMS = (400, 413, 422)  # not JSON text, too large, invalid
IF_MATCH_PROBLEMS = (412, 428)  # stale, not an ETag (or missing where required)


def _calls(dependant: Any) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route of `app` as served: the route (or, since FastAPI keeps included routers
    lazily, its effective context) with its full `path_format`, `methods`, `dependant` and
    `body_field`."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before lazy router inclusion: routes are copied into the app
        yield from (route for route in app.routes if isinstance(route, APIRoute))
        return
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context


def plumbing_problems(route: Any) -> set[int]:
    """The problem statuses the shared plumbing may answer on an API `route`."""
    statuses: set[int] = set() if route.path_format in EXEMPT_PATHS else {RATE_LIMITED}
    if route.body_field is not None:
        statuses.update(BODY_PROBLEMS)
    calls = set(_calls(route.dependant))
    if calls & {if_match, required_if_match}:
        statuses.update(IF_MATCH_PROBLEMS)
    return statuses


def document_problems(app: FastAPI) -> None:
    """Make `app.openapi()` document the plumbing's problems on every route, as problem+json."""
    generate = app.openapi
    done: list[dict[str, Any]] = []  # the document last completed (FastAPI caches it)

    def openapi() -> dict[str, Any]:
        document = generate()
        if done and done[0] is document:
            return document
        for route in api_routes(app):
            if not route.include_in_schema:
                continue
            item = document["paths"].get(route.path_format, {})
            added = plumbing_problems(route)
            for method in route.methods:
                operation = item.get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                for status in sorted(added):
                    responses.setdefault(str(status), {"description": HTTPStatus(status).phrase})
                for status, response in responses.items():
                    if status.isdigit() and int(status) >= 400:
                        response["content"] = {PROBLEM_JSON: {"schema": PROBLEM_REF}}
        document.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        done[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
