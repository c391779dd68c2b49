"""Worker entry point: `python -m services.sla.processor.worker [faust worker options]`.

Builds the app from the environment (`ITSM_SLA_…` / `ITSM_…`) and hands over to Faust's command
line; with no arguments it runs `worker --loglevel=info`.

Two guards keep a killed worker's successor from skipping records the dead worker had fetched
but not committed (found by tests/faust/test_failover_on_real_broker.py: the successor skipped
due records whose alerts had been published but not stored, and numbered its next alert like
one already sent, which downstream dedupe would drop):

- `ITSM_SLA_AUTO_OFFSET_RESET=latest` is not handed to Faust, which applies it to every
  partition without a committed offset, the due topic included. A new consumer group instead
  gets the current end of the topics it consumes committed once, before it starts
  (`start_new_group_at_the_end`), and Faust always runs with `earliest`.
- After a rebalance Faust drops the records fetched meanwhile and seeks back to the committed
  offsets; aiokafka leaves a partition without one (or at 0) where the dropped fetch left it.
  `rewind_uncommitted_partitions` seeks those to the beginning.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from typing import Any, cast

import structlog
from faust.transport.drivers import aiokafka as faust_aiokafka

from services.sla.processor.app import create_app
from services.sla.processor.settings import SlaSettings
from shared.bus.offsets import start_new_group_at_the_end
from shared.logs import configure_logging
from shared.metrics import serve_metrics
from shared.telemetry import setup_tracing

log = structlog.get_logger(__name__)


def rewind_uncommitted_partitions() -> None:
    """Make Faust's seek to the committed offsets also rewind partitions that have none."""
    thread = faust_aiokafka.AIOKafkaConsumerThread

    async def seek_to_committed(self: Any) -> Mapping[Any, int | None]:
        consumer = self._ensure_consumer()
        changelogs = self.app.tables.changelog_topics  # positioned by Faust's recovery, not here

        async def seek() -> Mapping[Any, int | None]:
            committed: Mapping[Any, int | None] = await consumer.seek_to_committed()
            uncommitted = [
                tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs
            ]
            if uncommitted:
                await consumer.seek_to_beginning(*uncommitted)
            return committed

        return cast(Mapping[Any, int | None], await self.call_thread(seek))

    setattr(thread, "seek_to_committed", seek_to_committed)  # noqa: B010 -- a method, on purpose


def main(argv: list[str] | None = None) -> None:
    settings = SlaSettings()
    configure_logging(settings.log_level, json=settings.log_json)
    setup_tracing("itsm-sla-processor")
    app = create_app(settings.model_copy(update={"auto_offset_reset": "earliest"}))
    rewind_uncommitted_partitions()
    args = list(sys.argv[1:] if argv is None else argv) or ["worker", "--loglevel=info"]
    if args[0] == "worker" and settings.auto_offset_reset == "latest":
        consumed = [name for agent in app.agents.values() for name in agent.channel.topics]
        loop = asyncio.new_event_loop()  # not Faust's: it starts its own below
        try:
            loop.run_until_complete(
                start_new_group_at_the_end(settings.kafka_bootstrap, settings.app_id, consumed)
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
