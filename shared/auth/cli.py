"""Mint development tokens: `itsm-token --sub alice --role agent`.

Reads the signing key from ITSM_DEV_SIGNING_KEY, or from the key file the embedded platform
writes (ITSM_DEV_SIGNING_KEY_FILE, default .localstack/dev-signing-key). Never for production:
production validates tokens from an OIDC issuer.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shared.auth.principal import Role
from shared.auth.tokens import mint_dev_token

DEFAULT_KEY_FILE = Path(".localstack") / "dev-signing-key"


def dev_key_file() -> Path:
    return Path(os.environ.get("ITSM_DEV_SIGNING_KEY_FILE", DEFAULT_KEY_FILE))


def load_dev_key() -> str | None:
    key = os.environ.get("ITSM_DEV_SIGNING_KEY")
    if key:
        return key
    path = dev_key_file()
    return path.read_text().strip() if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="itsm-token", description=__doc__)
    parser.add_argument("--sub", required=True, help="subject (user id)")
    parser.add_argument(
        "--role", action="append", required=True, choices=[r.value for r in Role], dest="roles"
    )
    parser.add_argument("--name")
    parser.add_argument("--email")
    parser.add_argument("--group", action="append", default=[], dest="groups")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    parser.add_argument("--issuer", default=os.environ.get("ITSM_JWT_ISSUER", "itsm-dev"))
    parser.add_argument("--audience", default=os.environ.get("ITSM_JWT_AUDIENCE", "itsm"))
    args = parser.parse_args(argv)
    key = load_dev_key()
    if not key:
        print(
            "no dev signing key: set ITSM_DEV_SIGNING_KEY or start `make run` once",
            file=sys.stderr,
        )
        return 2
    extra = {k: v for k, v in {"name": args.name, "email": args.email}.items() if v}
    if args.groups:
        extra["groups"] = args.groups
    print(
        mint_dev_token(
            key,
            subject=args.sub,
            roles=args.roles,
            issuer=args.issuer,
            audience=args.audience,
            ttl_seconds=args.ttl,
            **extra,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
