"""Worker entry point: `python -m services.sla.processor.worker [faust worker options]`.

Builds the app from the environment (`ITSM_SLA_…` / `ITSM_…`) and hands over to Faust's command
line; with no arguments it runs `worker --loglevel=info`.
"""

from __future__ import annotations

import sys

from services.sla.processor.app import create_app
from services.sla.processor.settings import SlaSettings
from shared.logs import configure_logging
from shared.telemetry import setup_tracing


def main(argv: list[str] | None = None) -> None:
    settings = SlaSettings()
    configure_logging(settings.log_level, json=settings.log_json)
    setup_tracing(settings.service_name)
    app = create_app(settings)
    args = list(sys.argv[1:] if argv is None else argv) or ["worker", "--loglevel=info"]
    if args[0] == "worker" and not settings.web_enabled and "--with-web" not in args:
        args.append("--without-web")  # Faust's CLI starts the web server unless told not to
    sys.argv = [sys.argv[0], *args]
    app.main()


if __name__ == "__main__":
    main()
