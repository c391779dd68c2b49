"""ETags carry the aggregate version; If-Match guards writes against lost updates."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from shared.errors import PreconditionRequired


def etag(version: int) -> str:
    return f'"{version}"'


def parse_etag(value: str) -> int:
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise PreconditionRequired(f"If-Match {value!r} is not an ETag of this API")
    return int(tag)


async def if_match(value: Annotated[str | None, Header(alias="If-Match")] = None) -> int | None:
    """Optional on actions: when sent, a stale version is refused with 412."""
    return parse_etag(value) if value else None


async def required_if_match(value: Annotated[str | None, Header(alias="If-Match")] = None) -> int:
    """Edits must say which version they change (428 without it)."""
    if not value:
        raise PreconditionRequired("send If-Match with the ETag you read to change it")
    return parse_etag(value)


IfMatch = Annotated[int | None, Depends(if_match)]
RequiredIfMatch = Annotated[int, Depends(required_if_match)]
