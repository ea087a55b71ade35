"""An OpenAI-style chat-completions API on loopback, in the documented wire format.

Behaviour is set on the object while it runs: ``mode`` ("ok", "revoked" -> 401 invalid_api_key,
"quota" -> 429 insufficient_quota, "forbidden" -> 403, "broken" -> 500, "rate_limited" -> 429
rate_limit_exceeded for the next ``rate_limited_times`` calls, then ok), ``models`` (others get
404 model_not_found; ``/v1/models`` lists them, or answers 503 while ``loading``), ``delay``
(seconds before answering; streams pause as long between chunks).
The answer echoes the last user message; tokens are counted as words. A request with a bearer
key must carry ``api_key``; one without is served as a local model server (in the pod) would.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from typing import Any

from aiohttp import web

from .serving import Served


def _error(status: int, message: str, kind: str, code: str | None, headers: dict[str, str] | None = None):
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class OpenAIStandIn(Served):
    def __init__(self, models: tuple[str, ...] = ("gpt-4o",), api_key: str = "sk-test") -> None:
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        super().__init__(app)
        self.models = set(models)
        self.api_key = api_key
        self.mode = "ok"
        # As a local model server while it loads the model: /v1/models answers 503.
        self.loading = False
        self.model_looks = 0
        self.rate_limited_times = 0
        self.delay = 0.0
        self.calls = 0
        self.inflight = 0
        self.seen: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    async def _models(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.model_looks += 1
        if self.loading:
            return _error(503, "Loading model", "unavailable_error", None)
        listed = [{"id": m, "object": "model"} for m in sorted(self.models)]
        return web.json_response({"object": "list", "data": listed})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.calls += 1
            self.inflight += 1
        try:
            return await self._answer(request)
        finally:
            with self._lock:
                self.inflight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        body = await request.json()
        with self._lock:
            self.seen.append({"authorization": auth, "body": body})
            del self.seen[:-1000]
        if self.delay:
            await asyncio.sleep(self.delay)
        key = auth.removeprefix("Bearer ")
        # A key must be the right one; a request without one is taken for a local model server's.
        if self.mode == "revoked" or (key and key != self.api_key):
            shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
            return _error(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        if self.mode == "quota":
            return _error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            )
        if self.mode == "rate_limited":
            with self._lock:
                limited = self.rate_limited_times > 0
                self.rate_limited_times -= 1 if limited else 0
            if limited:
                return _error(
                    429,
                    "Rate limit reached for requests. Please try again in 200ms.",
                    "requests",
                    "rate_limit_exceeded",
                    {"retry-after-ms": "200", "x-ratelimit-remaining-requests": "0"},
                )
        if self.mode == "forbidden":
            return _error(403, "Project does not have access to this API.", "invalid_request_error", None)
        if self.mode == "broken":
            return _error(500, "The server had an error while processing your request.", "server_error", None)
        model = body.get("model")
        if model not in self.models:
            return _error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        messages = body.get("messages") or []
        last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        words = ["echo:", *str(last).split()]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        ident = f"chatcmpl-{next(self._ids)}"
        created = int(time.time())
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ".join(words)},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def send(choices: list[dict[str, Any]], usage_value: Any = None, with_usage: bool = False) -> None:
            chunk: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
            }
            if with_usage:
                chunk["usage"] = usage_value
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}], None, include_usage
        )
        for i, word in enumerate(words):
            if self.delay:
                await asyncio.sleep(self.delay / len(words))
            text = word if i == 0 else f" {word}"
            await send([{"index": 0, "delta": {"content": text}, "finish_reason": None}], None, include_usage)
        await send([{"index": 0, "delta": {}, "finish_reason": "stop"}], None, include_usage)
        if include_usage:
            await send([], usage, True)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
