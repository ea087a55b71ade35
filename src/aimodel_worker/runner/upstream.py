"""The OpenAI-style chat-completions API the worker calls (remote, or a local server in the pod)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from . import endpoints, openai_api, sse
from .openai_api import Failure

# What a requester is told when the upstream cannot be used: never its URL (which may carry
# credentials, and is the operator's business); the worker's log has the details.
UNREACHABLE = "the upstream API could not be reached"
NOT_JSON = "the upstream API answered with what is not JSON"


log = logging.getLogger("aimodel_worker")


class UpstreamFailure(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _unreachable(url: str, exc: BaseException) -> UpstreamFailure:
    log.warning("cannot reach %s: %s: %s", endpoints.redact(url), type(exc).__name__, exc)
    status = 504 if isinstance(exc, asyncio.TimeoutError) else 502
    return UpstreamFailure(Failure(status, openai_api.error_body(UNREACHABLE, "api_error"), None))


def _not_json(url: str, detail: str) -> UpstreamFailure:
    log.warning("%s: %s", endpoints.redact(url), detail)
    return UpstreamFailure(Failure(502, openai_api.error_body(NOT_JSON, "api_error"), None))


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
                    raise UpstreamFailure(openai_api.classify(resp.status, text, resp.headers))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _unreachable(self.url, exc) from exc
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            raise _not_json(self.url, f"HTTP {resp.status} without a JSON object")
        return doc

    async def stream(self, data: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The chunks of a streamed completion, as they arrive (an upstream that answers with a
        whole completion instead yields it as one chunk); raises UpstreamFailure."""
        try:
            async with self.session.post(self.url, json=data, headers=self.headers, timeout=self.timeout) as resp:
                if resp.status >= 400:
                    raise UpstreamFailure(openai_api.classify(resp.status, await resp.text(), resp.headers))
                if "text/event-stream" not in resp.headers.get("Content-Type", ""):
                    doc = json.loads(await resp.text())
                    whole = openai_api.completion_as_chunk(doc)
                    if openai_api.usage_of(doc):
                        whole["usage"] = doc["usage"]
                    yield whole
                    return
                events = sse.EventStream()
                async for raw in resp.content:
                    event = events.feed(raw.decode("utf-8", "replace").rstrip("\r\n"))
                    if event is None:
                        continue
                    if event.strip() == "[DONE]":
                        return
                    doc = json.loads(event)
                    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
                        # An error in the middle of a stream (the upstream's status was already 200).
                        raise UpstreamFailure(openai_api.classify(500, event))
                    yield doc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _unreachable(self.url, exc) from exc
        except (ValueError, RecursionError) as exc:
            raise _not_json(self.url, f"a stream event that is not JSON: {exc}") from exc
