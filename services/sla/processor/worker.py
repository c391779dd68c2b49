"""Worker entry point: `python -m services.sla.processor.worker [faust worker options]`.

Builds the app from the environment (`ITSM_SLA_…` / `ITSM_…`) and hands over to Faust's command
line; with no arguments it runs `worker --loglevel=info`.

Guards on Faust's consumer keep a worker from skipping records (`processor/fetching.py`):

- `ITSM_SLA_AUTO_OFFSET_RESET=latest` is not handed to Faust, which applies it to every
  partition without a committed offset, the due topic included (found by
  tests/faust/test_failover_on_real_broker.py: a killed worker's successor skipped due records
  whose alerts had been published but not stored, and numbered its next alert like one already
  sent, which downstream dedupe would drop). A new consumer group instead gets the current end of
  the topics it consumes committed once, before it starts (`start_new_group_at_the_end`), and
  Faust always runs with `earliest`.
- `install_consumer_guards`: partitions without a committed offset are rewound after a
  rebalance, and records a seek overtook are never handed over.
"""

from __future__ import annotations

import asyncio
import sys

import structlog
from faust.worker import Worker

from services.sla.processor.app import create_app
from services.sla.processor.fetching import install_consumer_guards
from services.sla.processor.settings import SlaSettings
from services.sla.processor.topics import changelog_topic_name
from shared.bus.offsets import start_new_group_at_the_end
from shared.bus.security import kafka_client_kwargs
from shared.logs import configure_logging, summarise_repeats
from shared.metrics import serve_metrics
from shared.telemetry import setup_tracing, untraced_sends

log = structlog.get_logger(__name__)


def no_terminal_spinner() -> None:
    """Faust's worker runs a terminal progress spinner at `--loglevel=warning` and above, and to
    feed it sets the root logger to DEBUG, so every library builds its debug records (a tenth of
    the worker's CPU in bench.sla_throughput). A service has no terminal: no spinner."""

    def without_spinner(worker: Worker, level: int) -> None:
        worker.spinner = None

    Worker._disable_spinner_if_level_below_WARN = without_spinner  # type: ignore[method-assign,assignment]


def quiet_faust_logs() -> None:
    """No spinner; and Faust's "producer buffer full" warning, logged once per record held back
    while table writes outpace its sending task (a due burst: backpressure, not loss), becomes
    one line per 10 s with a count."""
    no_terminal_spinner()
    summarise_repeats("faust.transport.producer")


def main(argv: list[str] | None = None) -> None:
    settings = SlaSettings()
    configure_logging(settings.log_level, json=settings.log_json)
    setup_tracing("itsm-sla-processor")
    untraced_sends(lambda topic: topic == changelog_topic_name(settings.app_id))
    quiet_faust_logs()
    app = create_app(settings.model_copy(update={"auto_offset_reset": "earliest"}))
    install_consumer_guards()
    args = list(sys.argv[1:] if argv is None else argv) or ["worker", "--loglevel=info"]
    if args[0] == "worker" and settings.auto_offset_reset == "latest":
        consumed = [name for agent in app.agents.values() for name in agent.channel.topics]
        loop = asyncio.new_event_loop()  # not Faust's: it starts its own below
        try:
            loop.run_until_complete(
                start_new_group_at_the_end(
                    settings.kafka_bootstrap,
                    settings.app_id,
                    consumed,
                    kafka_client_kwargs(settings),
                )
            )
        finally:
            loop.close()
    if args[0] == "worker" and not settings.web_enabled and "--with-web" not in args:
        args.append("--without-web")  # Faust's CLI starts the web server unless told not to
    if args[0] == "worker" and settings.metrics_port:
        serve_metrics(settings.metrics_port, settings.metrics_host)
        log.info("sla.metrics.serving", port=settings.metrics_port)
    sys.argv = [sys.argv[0], *args]
    app.main()


if __name__ == "__main__":
    main()
