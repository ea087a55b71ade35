"""The OpenAI-style chat-completions API the worker calls (remote, or a local server in the pod)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from . import protocol
from .protocol import Failure


class UpstreamFailure(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _unreachable(url: str, exc: BaseException) -> UpstreamFailure:
    detail = str(exc) or type(exc).__name__
    status = 504 if isinstance(exc, asyncio.TimeoutError) else 502
    return UpstreamFailure(Failure(status, protocol.error_body(f"cannot reach {url}: {detail}", "api_error"), None))


class Upstream:
    def __init__(self, session: aiohttp.ClientSession, url: str, api_key: str, timeout: float) -> None:
        self.session = session
        self.url = url
        self.headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)

    async def complete(self, data: dict[str, Any]) -> dict[str, Any]:
        """A whole completion; raises UpstreamFailure."""
        try:
            async with self.session.post(self.url, json=data, headers=self.headers, timeout=self.timeout) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise UpstreamFailure(protocol.classify(resp.status, text, resp.headers))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _unreachable(self.url, exc) from exc
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            body = protocol.error_body(f"{self.url} answered HTTP {resp.status} without a JSON object", "api_error")
            raise UpstreamFailure(Failure(502, body, None))
        return doc

    async def stream(self, data: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The chunks of a streamed completion, as they arrive (an upstream that answers with a
        whole completion instead yields it as one chunk); raises UpstreamFailure."""
        try:
            async with self.session.post(self.url, json=data, headers=self.headers, timeout=self.timeout) as resp:
                if resp.status >= 400:
                    raise UpstreamFailure(protocol.classify(resp.status, await resp.text(), resp.headers))
                if "text/event-stream" not in resp.headers.get("Content-Type", ""):
                    doc = json.loads(await resp.text())
                    whole = protocol.completion_as_chunk(doc)
                    if protocol.usage_of(doc):
                        whole["usage"] = doc["usage"]
                    yield whole
                    return
                events = protocol.EventStream()
                async for raw in resp.content:
                    event = events.feed(raw.decode("utf-8", "replace").rstrip("\r\n"))
                    if event is None:
                        continue
                    if event.strip() == "[DONE]":
                        return
                    doc = json.loads(event)
                    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
                        # An error in the middle of a stream (the upstream's status was already 200).
                        raise UpstreamFailure(protocol.classify(500, event))
                    yield doc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _unreachable(self.url, exc) from exc
        except ValueError as exc:
            body = protocol.error_body(f"{self.url} sent what is not JSON: {exc}", "api_error")
            raise UpstreamFailure(Failure(502, body, None)) from exc
