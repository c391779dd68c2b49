"""Tables for processor tests without Faust."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class WriteLog(dict[str, Any]):
    """A table that keeps its writes in order, as its changelog partition would (a deletion is
    written as None). `on_write`, if set, is called after each write."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.writes: list[tuple[str, Any]] = []
        self.on_write: Callable[[], None] | None = None

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._written(key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._written(key, None)

    def _written(self, key: str, value: Any) -> None:
        self.writes.append((key, value))
        if self.on_write is not None:
            self.on_write()

    def replay(self, writes: list[tuple[str, Any]]) -> None:
        """Apply `writes` (a changelog's records) to this table."""
        for key, value in writes:
            if value is None:
                self.pop(key, None)
            else:
                dict.__setitem__(self, key, value)
