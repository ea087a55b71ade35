"""A fault-injection HTTP proxy between a Kubernetes client and the real kube-apiserver.

Clients talk plain HTTP to 127.0.0.1:<port>; every request is forwarded over HTTPS to the
server of the given kubeconfig, with the admin client certificate unless the request carries
its own Authorization header (a ServiceAccount token keeps its identity). Responses are relayed
chunk by chunk (JSON watch streams line by line), so watches stay live.

The proxy runs its own asyncio loop in a background thread; its controls are synchronous and
may be called from the test thread. Port-forward/exec upgrades (SPDY, WebSocket) are not supported.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import aiohttp
import yaml
from aiohttp import web
from multidict import CIMultiDict

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
# Hop-by-hop or recomputed by one side of the proxy; never copied.
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}
_SKIP_REQUEST = _HOP | {"host", "accept-encoding", "upgrade"}
_SKIP_RESPONSE = _HOP | {"content-encoding"}


def status_body(code: int, message: str = "injected") -> dict:
    """A Kubernetes ``Status`` object for a failure with this HTTP code."""
    reason = REASONS.get(code, "InternalError" if code >= 500 else "BadRequest")
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def watch_error_line(code: int) -> bytes:
    return json.dumps({"type": "ERROR", "object": status_body(code)}).encode() + b"\n"


def _pem(section: dict, key: str) -> bytes:
    """A kubeconfig's PEM: embedded as ``<key>-data`` or in the file ``<key>``."""
    if f"{key}-data" in section:
        return base64.b64decode(section[f"{key}-data"])
    return Path(section[key]).read_bytes()


class Request(NamedTuple):
    time: float  # time.monotonic() when the request arrived
    method: str
    path: str  # with the query string
    status: int  # 502 when the API server could not be reached


class _Stream:
    """One request being relayed; the only writer of its response is its handler."""

    def __init__(self, request: web.BaseRequest, watch: bool) -> None:
        self.request = request
        self.watch = watch
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()  # data; None at the upstream's end
        self.broken = False  # the upstream's end was not a clean one
        self.final: bytes | None = None  # set to end the response with this last line
        self.half_open = False

    def end_with(self, line: bytes) -> None:
        if self.final is None:
            self.final = line
            self.queue.put_nowait(b"")  # wake the handler

    def abort(self) -> None:
        """Close the client connection with a TCP reset, mid-response."""
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()


class FaultProxy:
    def __init__(self, kubeconfig: Path) -> None:
        cfg = yaml.safe_load(Path(kubeconfig).read_text())  # JSON is YAML too
        ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
        cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])["cluster"]
        user = next(u for u in cfg["users"] if u["name"] == ctx["user"])["user"]
        self.upstream = cluster["server"].rstrip("/")
        self._user_token = user.get("token")
        self._ssl_token = ssl.create_default_context(cadata=_pem(cluster, "certificate-authority").decode())
        self._ssl_admin = ssl.create_default_context(cadata=_pem(cluster, "certificate-authority").decode())
        if "client-certificate-data" in user or "client-certificate" in user:
            with tempfile.TemporaryDirectory(prefix="faultproxy-") as tmp:
                cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
                cert.write_bytes(_pem(user, "client-certificate"))
                key.write_bytes(_pem(user, "client-key"))
                self._ssl_admin.load_cert_chain(cert, key)
        self._lock = threading.Lock()
        self._records: list[Request] = []
        self._streams: set[_Stream] = set()  # touched on the loop only
        self._fail: tuple[int, float] | None = None  # (status, until), under the lock like the records
        self._expire: tuple[int, float] = (0, 0.0)  # (next watch requests, until), under the lock
        # Targeted faults, under the lock: [method, path fragment, status or delay, requests left].
        self._targeted: list[list] = []
        self._delayed: list[list] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._serve())
            except BaseException as err:
                error.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait()
        if error:
            raise error[0]
        return self

    async def _serve(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        # No connection limit (watches hold theirs); identity encoding, so watch lines stay readable.
        connector = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, skip_auto_headers=["Accept-Encoding"]
        )
        self._runner = web.ServerRunner(web.Server(self._handle, handler_cancellation=True), shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        for stream in list(self._streams):
            stream.abort()
        await self._runner.cleanup()
        await self._session.close()

    def stop(self) -> None:
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=15)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig_path(self, directory: Path, token: str | None = None) -> Path:
        """A kubeconfig for the proxy: no credentials, or the bearer ``token``.

        The operator's client sends the token over plain HTTP; kubectl (client-go) does not, so
        through the proxy kubectl is always the kubeconfig's user (kubernetes/kubectl#744).
        """
        path = Path(directory) / f"faultproxy-{self.port}{'-token' if token else ''}.kubeconfig"
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "faultproxy", "cluster": {"server": self.url}}],
            "users": [{"name": "faultproxy", "user": {"token": token} if token else {}}],
            "contexts": [{"name": "faultproxy", "context": {"cluster": "faultproxy", "user": "faultproxy"}}],
            "current-context": "faultproxy",
        }
        path.write_text(json.dumps(cfg, indent=2))
        return path

    def _on_loop(self, fn, *args):
        async def call():
            return fn(*args)

        assert self._loop is not None, "start() the proxy first"
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)

    def fail_all(self, status: int = 503, seconds: float | None = None) -> None:
        """Answer every new request with ``status`` (until heal() or ``seconds``); cut the open streams."""
        with self._lock:
            self._fail = (status, float("inf") if seconds is None else time.monotonic() + seconds)
        self._on_loop(self._cut)

    def heal(self) -> None:
        """End fail_all() and expire_watches(); half-open streams stay dead."""
        with self._lock:
            self._fail = None
            self._expire = (0, 0.0)

    def inject_watch_error(self, code: int = 500) -> None:
        """Send one ERROR event with this code on every open watch, then end it."""
        self._on_loop(self._end_watches, code)

    def expire_watches(self, count: int = 1, seconds: float | None = None) -> None:
        """End the open watches with a 410 Expired ERROR event, and answer so the next ``count``
        watch requests (or, with ``seconds``, all of them for that long) as their first line."""
        with self._lock:
            self._expire = (count, 0.0) if seconds is None else (0, time.monotonic() + seconds)
        self._on_loop(self._end_watches, 410)

    def fail_matching(self, method: str, fragment: str, status: int, count: int = 1) -> None:
        """Answer the next ``count`` requests of ``method`` whose path contains ``fragment`` with ``status``."""
        with self._lock:
            self._targeted.append([method, fragment, status, count])

    def delay_responses(self, method: str, fragment: str, seconds: float, count: int = 1) -> None:
        """Hold the API server's answer to the next ``count`` matching requests for ``seconds``.

        The request reaches the API server at once (its effect is real); only the client
        hears of it late: a stale response arriving after newer watch events.
        """
        with self._lock:
            self._delayed.append([method, fragment, seconds, count])

    def _take(self, rules: list[list], method: str, path: str) -> float | int | None:
        with self._lock:
            for rule in rules:
                if rule[3] > 0 and rule[0] == method and rule[1] in path:
                    rule[3] -= 1
                    return rule[2]
        return None

    def half_open(self) -> None:
        """The open streams stay connected but receive nothing more, ever."""
        self._on_loop(self._half_open)

    def cut(self) -> None:
        """Reset every open client connection, mid-response."""
        self._on_loop(self._cut)

    def requests(self, since: float | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self._records if since is None or r.time >= since]

    def writes(self, since: float | None = None) -> list[Request]:
        return [r for r in self.requests(since) if r.method != "GET"]

    def open_watches(self) -> int:
        return self._on_loop(lambda: sum(1 for s in self._streams if s.watch and not s.half_open))

    def _cut(self) -> None:
        for stream in list(self._streams):
            stream.abort()

    def _half_open(self) -> None:
        for stream in self._streams:
            stream.half_open = True

    def _end_watches(self, code: int) -> None:
        for stream in self._streams:
            if stream.watch:
                stream.end_with(watch_error_line(code))

    def _record(self, arrived: float, request: web.BaseRequest, status: int) -> None:
        with self._lock:
            self._records.append(Request(arrived, request.method, request.path_qs, status))

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        arrived = time.monotonic()
        watch = request.query.get("watch", "").lower() in ("true", "1")
        with self._lock:
            fail = self._fail[0] if self._fail and arrived < self._fail[1] else 0
            count, until = self._expire
            expire = watch and (count > 0 or arrived < until)
            if expire:
                self._expire = (count - 1, until)
        fail = fail or self._take(self._targeted, request.method, request.path_qs) or 0
        delay = self._take(self._delayed, request.method, request.path_qs)
        if fail:
            self._record(arrived, request, fail)
            return web.json_response(status_body(fail), status=fail)
        if expire:
            self._record(arrived, request, 200)
            return web.Response(body=watch_error_line(410), content_type="application/json")

        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _SKIP_REQUEST)
        if "Authorization" not in headers and self._user_token:
            headers["Authorization"] = f"Bearer {self._user_token}"
        stream = _Stream(request, watch)
        self._streams.add(stream)  # before connecting: a fault injected meanwhile applies too
        status = 0  # recorded when the client is gone before the API server answered
        try:
            body = await request.content.read() if request.body_exists else None
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body,
                ssl=self._ssl_token if "Authorization" in request.headers else self._ssl_admin,
            ) as upstream:
                status = upstream.status
                self._record(arrived, request, status)
                if delay:
                    await asyncio.sleep(delay)
                return await self._relay(request, stream, upstream)
        except aiohttp.ClientConnectionError as err:
            status = 502
            self._record(arrived, request, status)
            return web.json_response(status_body(status, f"faultproxy: {err}"), status=status)
        finally:
            self._streams.discard(stream)
            if status == 0:
                self._record(arrived, request, status)

    async def _relay(
        self, request: web.BaseRequest, stream: _Stream, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=upstream.status)
        for key, value in upstream.headers.items():
            if key.lower() not in _SKIP_RESPONSE:
                resp.headers.add(key, value)
        await resp.prepare(request)
        by_line = stream.watch and "json" in upstream.headers.get("Content-Type", "")
        pump = asyncio.create_task(self._pump(upstream, stream, by_line))
        try:
            while True:
                data = await stream.queue.get()
                if stream.half_open:
                    continue  # swallowed, the end included: the client never hears of it
                if stream.final is not None:
                    await resp.write(stream.final)
                    break
                if data is None:
                    if stream.broken:
                        stream.abort()  # the API server broke the stream: so does the proxy
                        return resp
                    break
                await resp.write(data)
            await resp.write_eof()
            return resp
        finally:
            pump.cancel()
            upstream.close()

    @staticmethod
    async def _pump(upstream: aiohttp.ClientResponse, stream: _Stream, by_line: bool) -> None:
        """Move the API server's data to the stream's queue (whole lines only for JSON watches)."""
        pending = b""
        try:
            async for chunk in upstream.content.iter_any():
                if by_line:
                    pending += chunk
                    cut = pending.rfind(b"\n") + 1
                    chunk, pending = pending[:cut], pending[cut:]
                if chunk:
                    stream.queue.put_nowait(chunk)
            if pending:
                stream.queue.put_nowait(pending)
        except aiohttp.ClientError:
            stream.broken = True
        finally:
            stream.queue.put_nowait(None)
