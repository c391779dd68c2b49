"""A local SMTP sink for the stack: `python -m devtools.stack.mailsink --port 1025 --dir DIR`.

Accepts every message on loopback (no TLS, no AUTH: notify talks to it with
`ITSM_NOTIFY_SMTP_SECURITY=plain`) and writes each one to DIR as `<time>-<n>.eml`, the raw
message with the envelope in `X-Sink-Mail-From` / `X-Sink-Rcpt-To` headers, and logs one line
per message. Nothing is relayed. Needs `aiosmtpd` (installed with the test extras).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any


class Sink:
    """An aiosmtpd handler writing each accepted message to a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._numbers = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        number = next(self._numbers)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        path = self.directory / f"{stamp}-{number:06d}.eml"
        content = envelope.original_content or envelope.content
        header = (
            f"X-Sink-Mail-From: {envelope.mail_from}\r\n"
            f"X-Sink-Rcpt-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(header + content)
        tmp.rename(path)  # readers never see half a message
        line = {"event": "mailsink.accepted", "file": path.name, "to": envelope.rcpt_tos}
        print(json.dumps(line), flush=True)
        return "250 2.0.0 accepted"


async def serve(host: str, port: int, directory: Path) -> None:
    from aiosmtpd.smtp import SMTP

    sink = Sink(directory)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, hostname="mailsink"), host, port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(json.dumps({"event": "mailsink.ready", "port": port, "dir": str(directory)}), flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.stack.mailsink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, required=True, help="where messages are written")
    args = parser.parse_args(argv)
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        print("the mail sink needs aiosmtpd: pip install -e '.[test]'", file=sys.stderr)
        return 2
    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.host, args.port, args.dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
