"""One bounded JSON POST with its outcome classified: what the webhook, Slack and Teams
channels have in common. Never logs or reports a URL beyond its host."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import structlog

from services.notify.channels.base import (
    ChannelTimeouts,
    DeliveryResult,
    Outcome,
    classify_http_status,
    endpoint_host,
    parse_retry_after,
)

log = structlog.get_logger(__name__)

USER_AGENT = "itsm-notify/1"
_MAX_ERROR_BODY = 2_048  # enough for Slack's "invalid_payload", bounded against a huge answer


def build_http_client(timeouts: ChannelTimeouts) -> httpx.AsyncClient:
    """The pooled client the HTTP channels share (build it in the lifespan, close it there).

    Redirects are not followed: a webhook that moved is a configuration error to fix, and
    following it would send signed payloads wherever a receiver points.
    """
    # httpx logs every request with its full URL at INFO; Slack and Teams URLs are secrets.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeouts.total, connect=timeouts.connect),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


async def post_json(
    client: httpx.AsyncClient,
    *,
    channel: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeouts: ChannelTimeouts,
    now: Callable[[], datetime] = utc_now,
) -> DeliveryResult:
    host = endpoint_host(url)

    def result(
        outcome: Outcome, detail: str, status: int | None = None, retry_after: float | None = None
    ) -> DeliveryResult:
        return DeliveryResult(outcome, channel, host, _scrub(detail, url), status, retry_after)

    request_headers = {"Content-Type": "application/json", **headers}
    per_phase = httpx.Timeout(timeouts.total, connect=timeouts.connect)
    try:
        # httpx bounds each phase; asyncio.timeout bounds the attempt as a whole, so a
        # receiver trickling bytes cannot hold a delivery forever.
        async with asyncio.timeout(timeouts.total):
            async with client.stream(
                "POST", url, content=body, headers=request_headers, timeout=per_phase
            ) as response:
                answer = await _read_capped(response)
    except (TimeoutError, httpx.TimeoutException) as exc:
        outcome = result(Outcome.TRANSIENT, f"timed out ({type(exc).__name__})")
    except httpx.UnsupportedProtocol:
        outcome = result(Outcome.PERMANENT, "unsupported URL scheme (use https:// or http://)")
    except httpx.TransportError as exc:
        outcome = result(Outcome.TRANSIENT, f"connection failed ({type(exc).__name__}: {exc})")
    except httpx.InvalidURL:
        outcome = result(Outcome.PERMANENT, "invalid URL")
    else:
        status = response.status_code
        verdict = classify_http_status(status)
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now())
        detail = f"HTTP {status}" if verdict is Outcome.DELIVERED else _error_detail(status, answer)
        outcome = result(verdict, detail, status=status, retry_after=retry_after)
    _log(outcome)
    return outcome


async def _read_capped(response: httpx.Response) -> bytes:
    """Read the (usually tiny) answer so the connection goes back to the pool, but never more
    than a few KiB of it."""
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks.extend(chunk)
        if len(chunks) >= _MAX_ERROR_BODY:
            break
    return bytes(chunks[:_MAX_ERROR_BODY])


def _error_detail(status: int, answer: bytes) -> str:
    text = " ".join(answer.decode("utf-8", "replace").split())[:200]
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


def _scrub(detail: str, url: str) -> str:
    """Belt and braces: no error text may carry the URL's secret path, query or userinfo."""
    parts = urlsplit(url)
    detail = detail.replace(url, endpoint_host(url))
    for secret in (parts.path.lstrip("/"), parts.query, parts.password):
        if secret:
            detail = detail.replace(secret, "[redacted]")
    return detail


def _log(outcome: DeliveryResult) -> None:
    fields = {
        "channel": outcome.channel,
        "endpoint": outcome.endpoint,
        "status": outcome.status,
        "outcome": outcome.outcome.value,
    }
    if outcome.delivered:
        log.info("notification delivered", **fields)
    else:
        log.warning("notification not delivered", detail=outcome.detail, **fields)


class JsonPostChannel:
    """What the HTTP channels share: the pooled client, the timeouts and the clock; `post`
    sends one JSON body to the target's URL and classifies the answer."""

    name = "http"

    def __init__(
        self,
        client: httpx.AsyncClient,
        timeouts: ChannelTimeouts,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._client = client
        self._timeouts = timeouts
        self._now = now

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> DeliveryResult:
        return await post_json(
            self._client,
            channel=self.name,
            url=url,
            body=body,
            headers=headers or {},
            timeouts=self._timeouts,
            now=self._now,
        )
