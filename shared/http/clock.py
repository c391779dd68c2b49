"""The request's notion of "now": the runtime's clock (injectable in tests), UTC-aware."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request


async def get_now(request: Request) -> datetime:
    now: datetime = request.app.state.clock()
    return now


Now = Annotated[datetime, Depends(get_now)]
