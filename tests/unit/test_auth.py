"""Token verification and the dev token CLI."""

from __future__ import annotations

import time

import jwt
import pytest

from shared.auth.cli import main as token_cli
from shared.auth.principal import Role
from shared.auth.tokens import InvalidToken, TokenVerifier, mint_dev_token

KEY = "k" * 48


def verifier() -> TokenVerifier:
    return TokenVerifier(issuer="itsm-dev", audience="itsm", dev_signing_key=KEY)


def token(**overrides: object) -> str:
    fields: dict = dict(subject="alice", roles=["agent"], issuer="itsm-dev", audience="itsm")
    key = overrides.pop("key", KEY)
    fields.update(overrides)
    return mint_dev_token(str(key), **fields)


def test_a_valid_token_yields_the_principal_and_roles() -> None:
    principal = verifier().verify(token(roles=["agent", "manager"], name="Alice"))
    assert principal.subject == "alice" and principal.name == "Alice"
    assert principal.roles == {Role.AGENT, Role.MANAGER} and principal.is_staff


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda: token(now=time.time() - 7200), "expired"),
        (lambda: token(key="x" * 48), "Signature"),
        (lambda: token(issuer="evil"), "issuer"),
        (lambda: token(audience="other"), "audience"),
        (lambda: jwt.encode({"sub": "a"}, KEY, algorithm="HS256"), "exp"),
        (lambda: jwt.encode({"sub": "a"}, None, algorithm="none"), "alg"),
    ],
    ids=["expired", "wrong-key", "wrong-issuer", "wrong-audience", "no-claims", "alg-none"],
)
def test_bad_tokens_are_rejected(bad, reason: str) -> None:
    with pytest.raises(InvalidToken, match=f"(?i){reason}"):
        verifier().verify(bad())


def test_unknown_roles_are_ignored_not_trusted() -> None:
    principal = verifier().verify(
        jwt.encode(
            {
                "sub": "mallory",
                "roles": ["superuser", "requester"],
                "iss": "itsm-dev",
                "aud": "itsm",
                "iat": int(time.time()),
                "exp": int(time.time()) + 60,
            },
            KEY,
            algorithm="HS256",
        )
    )
    assert principal.roles == {Role.REQUESTER} and not principal.is_staff


def test_short_dev_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenVerifier(issuer="i", audience="a", dev_signing_key="short")


def test_the_cli_mints_a_token_the_verifier_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ITSM_DEV_SIGNING_KEY", KEY)
    assert token_cli(["--sub", "bob", "--role", "requester", "--ttl", "60"]) == 0
    printed = capsys.readouterr().out.strip()
    principal = verifier().verify(printed)
    assert principal.subject == "bob" and principal.roles == {Role.REQUESTER}


def test_the_cli_explains_a_missing_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ITSM_DEV_SIGNING_KEY", raising=False)
    monkeypatch.setenv("ITSM_DEV_SIGNING_KEY_FILE", str(tmp_path / "absent"))
    assert token_cli(["--sub", "bob", "--role", "agent"]) == 2
    assert "ITSM_DEV_SIGNING_KEY" in capsys.readouterr().err
