"""JWT verification: a local signing key in development, an OIDC issuer's JWKS in production."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import jwt

from shared.auth.principal import Principal, Role

DEV_ALGORITHM = "HS256"
MIN_DEV_KEY_BYTES = 32


class InvalidToken(Exception):
    """The bearer token is missing, malformed, expired, wrongly signed or for someone else."""


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        dev_signing_key: str | None = None,
        dev_previous_key: str | None = None,
        jwks_url: str | None = None,
        algorithms: Iterable[str] = ("RS256", "ES256"),
        leeway_seconds: int = 30,
    ) -> None:
        """`dev_previous_key`: the key being retired during a rotation; tokens it signed still
        verify until it is removed (new tokens are signed with `dev_signing_key`)."""
        if (dev_signing_key is None) == (jwks_url is None):
            raise ValueError("configure exactly one of a dev signing key or an OIDC JWKS URL")
        if dev_previous_key is not None and dev_signing_key is None:
            raise ValueError("a previous dev signing key needs a current one")
        for key in (dev_signing_key, dev_previous_key):
            if key is not None and len(key.encode()) < MIN_DEV_KEY_BYTES:
                raise ValueError(f"a dev signing key must be at least {MIN_DEV_KEY_BYTES} bytes")
        self.issuer = issuer
        self.audience = audience
        self._dev_keys = [k for k in (dev_signing_key, dev_previous_key) if k is not None]
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, timeout=5) if jwks_url else None
        self._algorithms = [DEV_ALGORITHM] if dev_signing_key else list(algorithms)
        self._leeway = leeway_seconds

    @property
    def fetches_keys(self) -> bool:
        """True when verifying may fetch the issuer's JWKS over the network (blocking I/O)."""
        return self._jwks is not None

    def verify(self, token: str) -> Principal:
        try:
            if self._jwks is not None:
                claims = self._decode(token, self._jwks.get_signing_key_from_jwt(token).key)
            else:
                claims = self._decode_with_dev_keys(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        return principal_from_claims(claims)

    def _decode_with_dev_keys(self, token: str) -> dict[str, Any]:
        """The current key first; only a signature mismatch tries the previous one (an expired
        or foreign token is refused by the first attempt)."""
        *earlier, last = self._dev_keys
        for key in earlier:
            try:
                return self._decode(token, key)
            except jwt.InvalidSignatureError:
                continue
        return self._decode(token, last)

    def _decode(self, token: str, key: Any) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=self._algorithms,
            audience=self.audience,
            issuer=self.issuer,
            leeway=self._leeway,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
        return claims


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    raw_roles = claims.get("roles") or claims.get("realm_access", {}).get("roles") or []
    if isinstance(raw_roles, str):
        raw_roles = raw_roles.split()
    known = {r.value for r in Role}
    roles = frozenset(Role(r) for r in raw_roles if r in known)
    return Principal(
        subject=str(claims["sub"]),
        roles=roles,
        name=claims.get("name"),
        email=claims.get("email"),
        groups=frozenset(claims.get("groups") or ()),
    )


def mint_dev_token(
    signing_key: str,
    *,
    subject: str,
    roles: Iterable[str],
    issuer: str,
    audience: str,
    ttl_seconds: int = 3600,
    now: float | None = None,
    **extra: Any,
) -> str:
    """A development token signed with the local key (never used with an OIDC issuer)."""
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": subject,
        "roles": [Role(r).value for r in roles],
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "exp": issued + ttl_seconds,
        **extra,
    }
    return jwt.encode(claims, signing_key, algorithm=DEV_ALGORITHM)
