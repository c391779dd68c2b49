"""The worker's logging: Faust's terminal spinner would put the root logger at DEBUG."""

from __future__ import annotations

import io
import logging

import pytest
from faust.utils import terminal
from faust.worker import Worker

from services.sla.processor.worker import no_terminal_spinner, quiet_faust_logs
from shared.logs import RepeatSummary


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


class Monotonic:
    """A `time.monotonic` stand-in the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_repeated_producer_backpressure_warnings_become_one_line_per_interval() -> None:
    """Faust's conductor logs `producer buffer full size N` for every record it holds back
    while table writes outpace the producer's sending task: hundreds a second in a due burst.
    Through the worker's filter: the first line, then one per 10 s with how many were held."""
    clock = Monotonic()
    logger = logging.Logger("faust.transport.producer.stand-in", logging.INFO)
    out = io.StringIO()
    logger.addHandler(logging.StreamHandler(out))
    logger.addFilter(RepeatSummary(10.0, clock))

    for size in range(101, 601):  # 500 warnings within 5 s
        logger.warning(f"producer buffer full size {size}")
        clock.now += 0.01
    logger.info("producer flush took 0.1")  # another level has its own allowance
    clock.now += 5.2
    logger.warning("producer buffer full size 250")

    assert out.getvalue().splitlines() == [
        "producer buffer full size 101",
        "producer flush took 0.1",
        "producer buffer full size 250 (499 more like it in the last 10 s)",
    ]


def test_the_worker_summarises_fausts_producer_logger_once() -> None:
    quiet_faust_logs()
    quiet_faust_logs()
    installed = logging.getLogger("faust.transport.producer").filters
    assert [type(f) for f in installed].count(RepeatSummary) == 1
