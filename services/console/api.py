"""The console's own routes: its static files, its sign-in configuration, the dev login.

The development login mints a token for a chosen role with the platform's dev signing key. It
exists only while the platform runs in dev auth mode; in oidc mode it answers 404 and the
console signs in at the OIDC provider instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field, SecretStr
from starlette.staticfiles import StaticFiles

from shared.auth.principal import Role
from shared.auth.tokens import mint_dev_token
from shared.http.problems import Problem, problem_responses

STATIC_DIR = Path(__file__).parent / "static"
# People sign in; machine producers (the service role) never use the console.
HumanRole = Literal["requester", "agent", "change-manager", "manager", "admin"]

router = APIRouter(tags=["console"])


@dataclass(frozen=True)
class ConsoleConfig:
    auth_mode: str
    dev_signing_key: SecretStr | None
    issuer: str
    audience: str
    oidc_authority: str | None
    oidc_client_id: str | None
    oidc_scope: str
    dev_token_ttl_seconds: int

    @property
    def dev_login(self) -> bool:
        return self.auth_mode == "dev" and self.dev_signing_key is not None


async def get_config(request: Request) -> ConsoleConfig:
    config: ConsoleConfig = request.app.state.console_config
    return config


Config = Annotated[ConsoleConfig, Depends(get_config)]


class OidcClient(BaseModel):
    authority: str
    client_id: str
    scope: str


class SignInOptions(BaseModel):
    auth_mode: str
    dev_login: bool = Field(description="True only in dev auth mode")
    roles: list[str] = Field(description="The roles the development login offers")
    oidc: OidcClient | None = Field(description="Where the browser signs in, in oidc mode")


class DevLogin(BaseModel):
    subject: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    role: HumanRole
    name: str | None = Field(None, max_length=120)


class DevToken(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme, not a secret
    expires_in: int
    subject: str
    roles: list[str]


@router.get("/console/config.json", summary="How the console signs in (no secrets)")
async def sign_in_options(config: Config) -> SignInOptions:
    oidc = None
    if config.auth_mode == "oidc" and config.oidc_authority and config.oidc_client_id:
        oidc = OidcClient(
            authority=config.oidc_authority,
            client_id=config.oidc_client_id,
            scope=config.oidc_scope,
        )
    roles = list(get_args(HumanRole)) if config.dev_login else []
    return SignInOptions(
        auth_mode=config.auth_mode, dev_login=config.dev_login, roles=roles, oidc=oidc
    )


def same_origin(request: Request) -> bool:
    """A browser always sends Origin on a cross-site POST; a page elsewhere may not mint."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


@router.post(
    "/console/dev-login",
    responses=problem_responses(403, 404, 422),
    summary="Development only: a token for a chosen role (404 unless auth mode is dev)",
)
async def dev_login(body: DevLogin, request: Request, config: Config) -> DevToken:
    if not config.dev_login or config.dev_signing_key is None:
        raise Problem(404, "Not Found", "The development login exists only in dev auth mode.")
    if not same_origin(request):
        raise Problem(403, "Forbidden", "The development login answers the console's own origin.")
    extra: dict[str, Any] = {"name": body.name} if body.name else {}
    token = mint_dev_token(
        config.dev_signing_key.get_secret_value(),
        subject=body.subject,
        roles=[Role(body.role)],
        issuer=config.issuer,
        audience=config.audience,
        ttl_seconds=config.dev_token_ttl_seconds,
        **extra,
    )
    return DevToken(
        access_token=token,
        expires_in=config.dev_token_ttl_seconds,
        subject=body.subject,
        roles=[body.role],
    )


@cache
def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR, html=True)


def content_security_policy(config: ConsoleConfig) -> str:
    # Only the console's own scripts; the OIDC provider is reached for discovery and tokens.
    connect = "'self'"
    if config.oidc_authority:
        parts = urlsplit(config.oidc_authority)
        connect += f" {parts.scheme}://{parts.netloc}"
    return (
        f"default-src 'self'; connect-src {connect}; img-src 'self' data:; "
        "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    )


@router.get("/", include_in_schema=False)
@router.get("/console", include_in_schema=False)
async def console_root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console/{path:path}", include_in_schema=False)
async def console_file(path: str, request: Request, config: Config) -> Response:
    response = await static_files().get_response(path or "index.html", request.scope)
    response.headers["Content-Security-Policy"] = content_security_policy(config)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response
