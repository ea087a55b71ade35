"""The API gateway's answer endpoints on loopback: ``POST /res`` takes a whole answer
``{"request_id", "data"}``; the ``/res/ws`` WebSocket takes the frames ``{"request_id", "end",
"data"}`` of streamed answers. Answers are kept by request id for the test to wait on."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from .serving import Served


class EndpointStandIn(Served):
    def __init__(self) -> None:
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/res", self._post)
        app.router.add_get("/res/ws", self._ws)
        # A hostile answer URL on the gateway's own origin: redirects to ``moved_to`` (307 keeps
        # the method and body, so a client that follows it re-sends the answer there).
        app.router.add_route("*", "/moved", self._moved)
        super().__init__(app)
        self.answers: dict[str, list[dict[str, Any]]] = {}
        self.frames: dict[str, list[dict[str, Any]]] = {}
        self.ended: set[str] = set()
        # request_id -> when its (first) whole answer or end frame arrived (time.monotonic()).
        self.answered_at: dict[str, float] = {}
        self._changed = threading.Condition()
        # The next this many answers (POSTs and WebSocket handshakes) are refused with HTTP 503, as
        # a gateway that is restarting would; ``refused`` counts those refused so far.
        self.refuse = 0
        self.refused = 0
        self.moved_to = "http://127.0.0.1:9/"
        self.moved = 0

    @property
    def post_url(self) -> str:
        return f"{self.url}/res"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/res/ws"

    def request(self, model: str, text: str = "hello there", stream: bool = False) -> tuple[str, dict[str, Any]]:
        """A request as the gateway queues it on ``model-<model>``, answered here: (request_id, message)."""
        rid = str(uuid.uuid4())
        data: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
        if stream:
            data["stream"] = True
        endpoint = self.ws_url if stream else self.post_url
        return rid, {"request_id": rid, "endpoint": endpoint, "stream": stream, "data": data}

    def _refusing(self) -> bool:
        with self._changed:
            if self.refuse <= 0:
                return False
            self.refuse -= 1
            self.refused += 1
            self._changed.notify_all()
            return True

    async def _moved(self, request: web.Request) -> web.Response:
        with self._changed:
            self.moved += 1
        raise web.HTTPTemporaryRedirect(self.moved_to)

    async def _post(self, request: web.Request) -> web.Response:
        if self._refusing():
            return web.json_response({"error": "restarting"}, status=503)
        try:
            doc = await request.json()
        except ValueError:
            return web.json_response({"error": "invalid JSON"}, status=400)
        with self._changed:
            self.answers.setdefault(str(doc.get("request_id")), []).append(doc)
            self.answered_at.setdefault(str(doc.get("request_id")), time.monotonic())
            self._changed.notify_all()
        return web.json_response({"status": "ok"})

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self._refusing():
            return web.json_response({"error": "restarting"}, status=503)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            doc = json.loads(msg.data)
            with self._changed:
                rid = str(doc.get("request_id"))
                self.frames.setdefault(rid, []).append(doc)
                if doc.get("end"):
                    self.ended.add(rid)
                    self.answered_at.setdefault(rid, time.monotonic())
                self._changed.notify_all()
        return ws

    def _wait(self, what: str, ready, timeout: float):
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = ready()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                self._changed.wait(left)

    def answer(self, request_id: str, timeout: float = 30) -> dict[str, Any]:
        """The (first) whole answer to ``request_id``."""
        return self._wait(f"the answer to {request_id}", lambda: (self.answers.get(request_id) or [None])[0], timeout)

    def stream(self, request_id: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The frames of ``request_id``'s streamed answer, once its end frame arrived."""
        return self._wait(
            f"the streamed answer to {request_id}",
            lambda: list(self.frames[request_id]) if request_id in self.ended else None,
            timeout,
        )

    def count(self) -> int:
        with self._changed:
            return sum(len(v) for v in self.answers.values()) + len(self.ended)

    def wait_count(self, n: int, timeout: float) -> int:
        return self._wait(f"{n} answers", lambda: self.count() >= n and self.count(), timeout)
