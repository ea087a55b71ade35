"""The HTTP transport: connection pools, credentials, keep-warm, the write fence, metrics.

The client's verbs (``client.py``) speak to a ``Transport``; this is the real
one, over aiohttp. The unit tests speak to an in-memory one with the same
calls (``tests/fakekube.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import aiohttp

from aimodel_worker.credentials import Credentials
from aimodel_worker.errors import ConfigError

from .. import metrics
from .errors import NotLeading, describe
from .resources import resource_of

log = logging.getLogger(__name__)

# A projected ServiceAccount token is rotated by the kubelet: its file is read again after this many seconds.
TOKEN_REREAD = 60.0

# The API server closes a connection that has carried no request for 90 s (its IdleTimeout), and
# aiohttp drops idle pooled connections after 15 s unless told otherwise. A new connection costs a
# TCP and TLS handshake (5 ms on two busy cores, more than the rest of a status write), paid by the
# first request after a quiet spell: typically a worker's error report.
KEEPALIVE = 60.0
# How often an idle client sends one cheap read, so that one pooled connection stays open.
KEEP_WARM = 30.0

JSON = "application/json"

WriteGate = Callable[[], float | None]


class Answer(NamedTuple):
    status: int
    body: Any


class Stream(Protocol):
    """An open streamed answer (a watch)."""

    status: int

    async def body(self) -> Any:
        """The whole answer, parsed: read when the status is an error."""

    async def chunk(self) -> bytes:
        """The next bytes; ``b""`` at the end."""

    def release(self) -> None: ...


class Transport(Protocol):
    # Writes cancelled on their way (at shutdown): they may still land after we stopped.
    writes_cancelled: int

    async def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
        timeout: float = 30,
        accept: str = JSON,
    ) -> Answer: ...

    async def stream(self, path: str, query: Mapping[str, str], accept: str, timeout: float) -> Stream: ...

    async def close(self) -> None: ...


def parse(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


class _AiohttpStream:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.status = resp.status

    async def body(self) -> Any:
        raw = await self.resp.read()
        return parse(raw) if raw else ""

    async def chunk(self) -> bytes:
        return await self.resp.content.readany()

    def release(self) -> None:
        self.resp.release()


class HttpTransport:
    """``write_gate`` says for how many more seconds writes are allowed (None: forever).

    Leader election sets it: every write, also one already on its way through
    a reconcile, is checked just before it is sent and must finish before
    the lease could be taken over.
    """

    def __init__(
        self,
        creds: Credentials,
        pool_size: int = 64,
        write_gate: WriteGate | None = None,
        keep_warm: float | None = None,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self.creds = creds
        self.server = creds.server.rstrip("/")
        self._ssl = creds.ssl_context() if self.server.startswith("https://") else None
        # The kubeconfig's tls-server-name and proxy-url, for every request and watch.
        self._route: dict[str, Any] = {}
        if creds.tls_server_name and self._ssl is not None:
            self._route["server_hostname"] = creds.tls_server_name
        if creds.proxy_url:
            self._route["proxy"] = creds.proxy_url
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_read = -TOKEN_REREAD
        self.write_gate = write_gate
        self.writes_cancelled = 0
        self._keepalive = keepalive
        self._keep_warm = keep_warm
        self._warmer: asyncio.Task[None] | None = None
        self._last_request = 0.0
        self.connections_opened = 0
        self.keep_warm_reads = 0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = self._new_session("request", limit=self._pool_size, keepalive_timeout=self._keepalive)
            loop = asyncio.get_running_loop()
            self._last_request = loop.time()
            if self._keep_warm and self._warmer is None:
                self._warmer = loop.create_task(self._keep_warm_loop(self._keep_warm), name="keep-warm")
        return self._session

    def _watches(self) -> aiohttp.ClientSession:
        """Watches have connections of their own, as many as there are watches: each holds its
        connection for as long as it runs (one per kind, and per namespace with ``--namespaces``),
        so in the request pool they could take every connection, and a watch opened again would
        take the warm connection the next write was to use."""
        if self._watch_session is None:
            self._watch_session = self._new_session("watch", limit=0)
        return self._watch_session

    def _new_session(self, use: str, **pool: Any) -> aiohttp.ClientSession:
        """A connection pool for ``use`` (requests or watches), counting the connections it opens."""
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True, **pool)
        opened = metrics.API_CONNECTIONS.labels(use=use)

        async def connection_opened(*_args: Any) -> None:
            opened.inc()
            if use == "request":
                self.connections_opened += 1

        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(connection_opened)
        # No cookies, no automatic decompression guesses: plain JSON requests.
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trace_configs=[trace])

    async def _keep_warm_loop(self, every: float) -> None:
        """While the client is idle, one cheap read (``/version``, readable by everyone
        authenticated) every ``every`` seconds keeps a pooled connection open: the first request
        after a quiet spell does not wait for a new TLS connection. Busy, it reads nothing."""
        loop = asyncio.get_running_loop()
        while True:
            idle = loop.time() - self._last_request
            if idle < every:
                await asyncio.sleep(every - idle)
                continue
            try:
                answer = await self.send("GET", "/version", timeout=10)
                if answer.status >= 300:
                    log.debug("keep-warm read refused: HTTP %d", answer.status)
                    continue
                self.keep_warm_reads += 1
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.debug("keep-warm read failed: %s", describe(err))

    def _headers(self, accept: str = JSON, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": "aimodel-operator"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.creds.token_file:
            now = asyncio.get_running_loop().time()
            if now - self._token_read >= TOKEN_REREAD:
                try:
                    self._token = self.creds.bearer_token()
                except ConfigError as err:
                    log.warning("%s; keeping the token read before", err)
                self._token_read = now
            token = self._token
        else:
            token = self.creds.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def close(self) -> None:
        if self._warmer is not None:
            self._warmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warmer
            self._warmer = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._watch_session is not None:
            await self._watch_session.close()
            self._watch_session = None

    async def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
        timeout: float = 30,
        accept: str = JSON,
    ) -> Answer:
        if method == "GET":
            return await self._send(method, path, body, query, content_type, timeout, accept)
        if self.write_gate is not None:
            left = self.write_gate()
            if left is not None:
                if left <= 0:
                    raise NotLeading(f"{method} {path}: not leading")
                timeout = min(timeout, left)
        try:
            answer = await self._send(method, path, body, query, content_type, timeout, accept)
        except asyncio.CancelledError:
            # Sent or not, nobody knows: it may still land (leader election must allow for it).
            self.writes_cancelled += 1
            raise
        metrics.API_WRITES.labels(method=method, resource=resource_of(path)).inc()
        return answer

    async def _send(
        self,
        method: str,
        path: str,
        body: Any,
        query: Mapping[str, str] | None,
        content_type: str,
        timeout: float,
        accept: str,
    ) -> Answer:
        data_bytes = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            async with self._http().request(
                method,
                self.server + path,
                params=list((query or {}).items()),
                data=data_bytes,
                headers=self._headers(accept, content_type=content_type if data_bytes is not None else None),
                timeout=aiohttp.ClientTimeout(total=timeout),
                # A redirect would carry the token, and a write's body (a Secret's API_KEY), to
                # wherever it points: the API server never redirects; the 3xx is an error.
                allow_redirects=False,
                **self._route,
            ) as resp:
                raw = await resp.read()
        finally:
            self._last_request = asyncio.get_running_loop().time()
        return Answer(resp.status, parse(raw))

    async def stream(self, path: str, query: Mapping[str, str], accept: str, timeout: float) -> Stream:
        resp = await self._watches().get(
            self.server + path,
            params=list(query.items()),
            headers=self._headers(accept),
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
            **self._route,
        )
        return _AiohttpStream(resp)
