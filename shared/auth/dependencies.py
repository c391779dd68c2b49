"""FastAPI dependencies: the current user and role checks."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from shared.auth.principal import PRINCIPAL_SCOPE_KEY, Principal, Role
from shared.auth.tokens import InvalidToken, TokenVerifier
from shared.http.problems import Problem

_bearer = HTTPBearer(auto_error=False, description="OAuth2 bearer JWT")


def _verifier(request: Request) -> TokenVerifier:
    verifier: TokenVerifier = request.app.state.token_verifier
    return verifier


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401,
            "Authentication required",
            "Send an OAuth2 bearer token.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    verified: Principal | None = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if verified is not None:  # the rate limiter verified this request's token already
        return verified
    verifier = _verifier(request)
    try:
        if verifier.fetches_keys:  # PyJWKClient fetches synchronously: keep it off the loop
            principal = await run_in_threadpool(verifier.verify, credentials.credentials)
        else:
            principal = verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        raise Problem(
            401,
            "Invalid token",
            f"The bearer token was rejected: {exc}.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None
    request.scope[PRINCIPAL_SCOPE_KEY] = principal
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


def require_roles(*roles: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that admits only callers holding one of `roles` (else 403)."""
    allowed = frozenset(roles)

    async def check(user: CurrentUser) -> Principal:
        if not user.has_any(allowed):
            raise Problem(
                403,
                "Forbidden",
                f"This operation needs one of the roles: {', '.join(sorted(allowed))}.",
            )
        return user

    return check
