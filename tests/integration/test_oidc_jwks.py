"""Production auth: tokens from an OIDC issuer, verified against its JWKS served over real HTTP
on loopback (the issuer is simulated; the verification path is the production one)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.auth.principal import Role
from shared.auth.tokens import InvalidToken, TokenVerifier

ISSUER = "https://login.example.test/realms/itsm"


@pytest.fixture(scope="module")
def issuer_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url(issuer_key: rsa.RSAPrivateKey) -> Iterator[str]:
    jwk = json.loads(RSAAlgorithm.to_jwk(issuer_key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class JWKS(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), JWKS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/certs"
    server.shutdown()


def issued(key: object, kid: str = "k1", **overrides: object) -> str:
    now = int(time.time())
    claims = {
        "sub": "u-42",
        "iss": ISSUER,
        "aud": "itsm",
        "iat": now,
        "exp": now + 300,
        "realm_access": {"roles": ["agent", "offline_access"]},
        "email": "ann@example.test",
        **overrides,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def test_tokens_signed_by_the_issuer_are_accepted(
    jwks_url: str, issuer_key: rsa.RSAPrivateKey
) -> None:
    verifier = TokenVerifier(issuer=ISSUER, audience="itsm", jwks_url=jwks_url)
    principal = verifier.verify(issued(issuer_key))
    assert principal.subject == "u-42" and principal.roles == {Role.AGENT}
    assert principal.email == "ann@example.test" and verifier.fetches_keys


def test_tokens_signed_by_another_key_or_for_another_audience_are_rejected(
    jwks_url: str, issuer_key: rsa.RSAPrivateKey
) -> None:
    verifier = TokenVerifier(issuer=ISSUER, audience="itsm", jwks_url=jwks_url)
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidToken):
        verifier.verify(issued(impostor))
    with pytest.raises(InvalidToken):
        verifier.verify(issued(issuer_key, kid="unknown"))
    with pytest.raises(InvalidToken, match=r"(?i)audience"):
        verifier.verify(issued(issuer_key, aud="billing"))
    with pytest.raises(InvalidToken):  # an HS256 token keyed with the public key: alg confusion
        verifier.verify(jwt.encode({"sub": "x"}, "k" * 64, algorithm="HS256"))
