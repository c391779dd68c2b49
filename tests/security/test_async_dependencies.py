"""Every dependency of every route is a coroutine: FastAPI runs a plain `def` dependency in its
thread pool, one thread hop (and GIL hand-over) per request for what is a dictionary lookup.
Found in a profile of incident creates (5.6 % of the service's busy time in `run_in_threadpool`);
this keeps new dependencies from bringing the hop back."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from tests.security.services import SERVICES, _dependency_calls, api_routes, build_app


def is_async(call: Any) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004 - a class instance (HTTPBearer) counts too
    )


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_dependency_is_async(service: str, signing_key: str) -> None:
    app = build_app(service, signing_key)
    calls = {call for route in api_routes(app) for call in _dependency_calls(route.dependant)}
    assert len(calls) > 3
    assert sorted(getattr(c, "__qualname__", repr(c)) for c in calls if not is_async(c)) == []
