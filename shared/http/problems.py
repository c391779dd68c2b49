"""RFC 9457 problem+json responses for every error the platform returns."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
)
from shared.store.errors import AlreadyExists, ConcurrencyConflict, StoreUnavailable

PROBLEM_JSON = "application/problem+json"
_TYPE_BASE = "https://itsm.example/problems/"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type or _TYPE_BASE + title.lower().replace(" ", "-")
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
    }
    # Extensions add members; they never replace the standard ones (a `status` detail once
    # turned a 409's `status` into "retired").
    body.update((k, v) for k, v in problem.extensions.items() if k not in body)
    return JSONResponse(
        body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(request, exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "location": ".".join(str(p) for p in e.get("loc", ())),
                "message": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:5])
        return problem_response(
            request,
            Problem(422, "Invalid request", f"The request is invalid: {summary}", errors=errors),
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        return problem_response(
            request,
            Problem(exc.status_code, title, str(exc.detail), headers=dict(exc.headers or {})),
        )

    async def on_conflict(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ConcurrencyConflict)
        return problem_response(
            request,
            Problem(409, "Conflict", f"{exc}; read it again and retry your change."),
        )

    async def on_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(
            request,
            Problem(503, "Service unavailable", str(exc), headers={"Retry-After": "5"}),
        )

    def mapped(status: int, title: str) -> Any:
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            return problem_response(request, Problem(status, title, str(exc)))

        return handler

    async def on_out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # Date arithmetic on an instant the request names near year 1 or 9999 (a KPI range, an
        # on-call lookup) overflows Python's datetime: the request is out of range, not a 500.
        detail = f"A date or number in the request is out of the supported range ({exc})."
        return problem_response(request, Problem(422, "Invalid request", detail))

    async def on_precondition_failed(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PreconditionFailed)
        return problem_response(
            request,
            Problem(
                412,
                "Precondition failed",
                f"If-Match is stale: {exc}. Read it again and retry your change.",
                headers={"ETag": f'"{exc.current_version}"'},
                current_version=exc.current_version,
            ),
        )

    async def on_business_conflict(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Conflict)
        problem = Problem(409, "Conflict", str(exc))
        problem.extensions = dict(exc.details)
        return problem_response(request, problem)

    app.add_exception_handler(Conflict, on_business_conflict)
    app.add_exception_handler(NotFound, mapped(404, "Not found"))
    app.add_exception_handler(AlreadyExists, mapped(409, "Already exists"))
    app.add_exception_handler(Forbidden, mapped(403, "Forbidden"))
    app.add_exception_handler(Invalid, mapped(422, "Invalid request"))
    app.add_exception_handler(PreconditionRequired, mapped(428, "Precondition required"))
    app.add_exception_handler(PreconditionFailed, on_precondition_failed)
    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(ConcurrencyConflict, on_conflict)
    app.add_exception_handler(StoreUnavailable, on_unavailable)
    app.add_exception_handler(OverflowError, on_out_of_range)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem+json errors."""
    return {
        s: {"description": "Problem", "content": {PROBLEM_JSON: {"schema": {"type": "object"}}}}
        for s in statuses
    }
