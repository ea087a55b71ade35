"""Answers to the request's endpoint: one POST, or a WebSocket stream of frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp

from . import endpoints, gateway

TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)


class DeliveryError(Exception):
    """The answer did not reach the endpoint. ``gone``: the endpoint no longer waits for it (HTTP
    404/410: the gateway forgot the request, e.g. after its timeout); retrying is pointless."""

    def __init__(self, message: str, gone: bool = False) -> None:
        super().__init__(message)
        self.gone = gone


async def post(session: aiohttp.ClientSession, endpoint: str, payload: dict[str, Any]) -> None:
    url = gateway.http_url(endpoint)
    try:
        # No redirects: an answer goes to the endpoint that was checked, nowhere else.
        async with session.post(url, json=payload, timeout=TIMEOUT, allow_redirects=False) as resp:
            if 300 <= resp.status < 400:
                raise DeliveryError(f"{endpoints.redact(url)} answered HTTP {resp.status}: redirects are not followed")
            if resp.status >= 400:
                text = (await resp.text())[:200]
                raise DeliveryError(
                    f"{endpoints.redact(url)} answered HTTP {resp.status}: {text!r}", gone=resp.status in (404, 410)
                )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise DeliveryError(f"cannot deliver to {endpoints.redact(url)}: {type(exc).__name__}: {exc}") from exc


class Stream:
    """A streamed answer: a WebSocket to the endpoint, opened on the first frame."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: str) -> None:
        self.session = session
        self.url = gateway.websocket_url(endpoint)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.sent = 0

    async def send(self, frame: dict[str, Any]) -> None:
        try:
            if self.ws is None:
                timeout = aiohttp.ClientWSTimeout(ws_close=10)
                self.ws = await self.session.ws_connect(self.url, timeout=timeout, heartbeat=30)
            await self.ws.send_str(json.dumps(frame, separators=(",", ":")))
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            gone = isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status in (404, 410)
            where = endpoints.redact(self.url)
            raise DeliveryError(f"cannot stream to {where}: {type(exc).__name__}: {exc}", gone=gone) from exc
        self.sent += 1

    async def close(self) -> None:
        if self.ws is not None:
            ws, self.ws = self.ws, None
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                await ws.close()
