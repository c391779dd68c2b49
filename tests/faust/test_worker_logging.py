"""The worker's logging: Faust's terminal spinner would put the root logger at DEBUG."""

from __future__ import annotations

import io
import logging

import pytest
from faust.utils import terminal
from faust.worker import Worker

from services.sla.processor.worker import no_terminal_spinner


def root_after_setup(level: int) -> logging.Logger:
    """A root logger stand-in after Faust's worker has configured it at `level`."""
    worker = Worker.__new__(Worker)
    worker.spinner = terminal.Spinner(file=io.StringIO())
    root = logging.Logger("root-stand-in", level)
    root.addHandler(logging.StreamHandler(io.StringIO()))
    worker.on_setup_root_logger(root, level)
    return root


def test_without_the_spinner_a_warning_level_stays_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Worker._disable_spinner_if_level_below_WARN
    monkeypatch.setattr(Worker, "_disable_spinner_if_level_below_WARN", original)  # restored after
    assert root_after_setup(logging.WARNING).level == logging.DEBUG  # Faust's own behaviour
    no_terminal_spinner()
    root = root_after_setup(logging.WARNING)
    assert root.level == logging.WARNING and len(root.handlers) == 1
    assert not root.isEnabledFor(logging.DEBUG)
