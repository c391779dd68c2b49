"""The `Idempotency-Key` request header of creates (shared/store/idempotency.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

from shared.store.idempotency import HEADER, HEADER_DESCRIPTION, KEY_PATTERN

IdempotencyKeyHeader = Annotated[
    str | None, Header(alias=HEADER, pattern=KEY_PATTERN, description=HEADER_DESCRIPTION)
]
