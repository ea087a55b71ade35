"""API access over aiohttp for plain-dict manifests.

Objects stay JSON dicts end to end: no generated model classes (they cost
memory and time for nothing here; not importing a generated client saves
about 38 MB of resident memory). Credentials come from the pod's
ServiceAccount or a kubeconfig (token, token file or client certificate),
read by the same loader as the worker SDK's. Every write is a server-side
apply under the operator's single field manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import aiohttp

from aimodel_contract import backoff
from aimodel_worker.credentials import Credentials, load_credentials
from aimodel_worker.errors import ConfigError

from . import metrics
from .objects import Manifest
from .settings import FIELD_MANAGER

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body
        self.message = str(body.get("message") if isinstance(body, dict) else str(body)[:300])
        super().__init__(f"{method} {path}: HTTP {status}: {self.message}")

    @property
    def reason(self) -> str:
        return str(self.body.get("reason") or "") if isinstance(self.body, dict) else ""

    @property
    def namespace_terminating(self) -> bool:
        """Refused because the namespace is being deleted: nothing to do there anymore."""
        causes = (self.body.get("details") or {}).get("causes") or [] if isinstance(self.body, dict) else []
        return any(c.get("reason") == "NamespaceTerminating" for c in causes)


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace:
            base += f"/namespaces/{segment(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{segment(name)}"
        if subresource:
            base += f"/{subresource}"
        return base


def segment(value: str) -> str:
    """One path segment, every reserved character escaped: a name can never climb to another path."""
    if value in (".", ".."):
        raise ValueError(f"invalid name {value!r}")
    return quote(value, safe="")


def describe(err: BaseException) -> str:
    """An error for the log: its type and message. Never ``repr``: aiohttp's errors carry the
    request's headers, the bearer token among them."""
    return f"{type(err).__name__}: {err}"


class NotLeading(Exception):
    """A write refused because this instance may not write (leadership lost or about to lapse)."""


DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
SECRETS = Resource("", "v1", "secrets", "Secret")
EVENTS = Resource("", "v1", "events", "Event")
SCALED_OBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
TRIGGER_AUTHS = Resource("keda.sh", "v1alpha1", "triggerauthentications", "TriggerAuthentication")
REPLICA_SETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
PODS = Resource("", "v1", "pods", "Pod")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")

BY_KIND = {
    r.kind: r for r in (DEPLOYMENTS, SERVICE_ACCOUNTS, ROLES, ROLE_BINDINGS, SECRETS, SCALED_OBJECTS, TRIGGER_AUTHS)
}


def resource_of(path: str) -> str:
    """The resource (with subresource) a REST path addresses: /api/v1/namespaces/ns/events/x -> events."""
    parts = path.split("?")[0].strip("/").split("/")
    parts = parts[2:] if parts[0] == "api" else parts[3:]
    if len(parts) >= 2 and parts[0] == "namespaces":
        parts = parts[2:]
    return "/".join(parts[:1] + parts[2:3]) or "namespaces"


class ConfigurationError(Exception):
    """No usable credentials: said once at start, not retried."""


async def load_configuration() -> Credentials:
    """In-cluster credentials when running in a pod, else the usual kubeconfig (``$KUBECONFIG``,
    else ~/.kube/config). Exec and auth-provider plugins are not supported: use a token (e.g.
    ``kubectl create token``) or a client certificate."""
    try:
        return load_credentials()
    except ConfigError as err:
        raise ConfigurationError(str(err)) from None


# Metadata alone (what client-go's metadata client asks for), with plain JSON as the fallback
# for a server that cannot: lists and watches answer PartialObjectMetadata(List).
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"

# A projected ServiceAccount token is rotated by the kubelet: its file is read again after this many seconds.
TOKEN_REREAD = 60.0

# The API server closes a connection that has carried no request for 90 s (its IdleTimeout), and
# aiohttp drops idle pooled connections after 15 s unless told otherwise. A new connection costs a
# TCP and TLS handshake (5 ms on two busy cores, more than the rest of a status write), paid by the
# first request after a quiet spell: typically a worker's error report.
KEEPALIVE = 60.0
# How often an idle client sends one cheap read, so that one pooled connection stays open.
KEEP_WARM = 30.0


WriteGate = Callable[[], float | None]


class Kube:
    """API access. ``write_gate`` says for how many more seconds writes are allowed (None: forever).

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
        # Writes cancelled on their way (at shutdown): they may still land after we stopped.
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
                await self.request("GET", "/version", timeout=10)
                self.keep_warm_reads += 1
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.debug("keep-warm read failed: %s", describe(err))

    def _headers(self, accept: str = "application/json", content_type: str | None = None) -> dict[str, str]:
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

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
        with_status: bool = False,
        accept: str = "application/json",
    ) -> Any:
        if method != "GET" and self.write_gate is not None:
            left = self.write_gate()
            if left is not None:
                if left <= 0:
                    raise NotLeading(f"{method} {path}: not leading")
                timeout = min(timeout, left)
        if method != "GET":
            return await self._write(method, path, body, query, content_type, timeout, with_status, accept)
        return await self._send(method, path, body, query, content_type, timeout, with_status, accept)

    async def _write(self, *args: Any) -> Any:
        try:
            return await self._send(*args)
        except asyncio.CancelledError:
            # Sent or not, nobody knows: it may still land (leader election must allow for it).
            self.writes_cancelled += 1
            raise

    async def _send(
        self,
        method: str,
        path: str,
        body: Any,
        query: dict[str, Any] | None,
        content_type: str,
        timeout: float,
        with_status: bool,
        accept: str = "application/json",
    ) -> Any:
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
        if method != "GET":
            metrics.API_WRITES.labels(method=method, resource=resource_of(path)).inc()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        if resp.status >= 300:
            raise ApiError(resp.status, data, method, path)
        return (data, resp.status) if with_status else data

    async def apply(self, obj: Manifest, force: bool = True) -> tuple[Manifest, bool]:
        """Server-side apply of a child; also says whether the apply created it (201) or changed it (200)."""
        res = BY_KIND.get(obj["kind"])
        if res is None:
            raise ValueError(f"unknown kind {obj['kind']}")
        meta = obj["metadata"]
        query = {"fieldManager": FIELD_MANAGER}
        if force:
            query["force"] = "true"
        data, status = await self.request(
            "PATCH",
            res.path(meta.get("namespace"), meta["name"]),
            body=obj,
            query=query,
            content_type="application/apply-patch+yaml",
            with_status=True,
        )
        return data, status == 201

    async def apply_to(
        self, res: Resource, obj: Manifest, subresource: str | None = None, force: bool = True
    ) -> Manifest:
        """Server-side apply; without ``force`` a field another manager set differently is a 409."""
        meta = obj["metadata"]
        path = res.path(meta.get("namespace"), meta["name"], subresource)
        query = {"fieldManager": FIELD_MANAGER}
        if force:
            query["force"] = "true"
        applied = await self.request("PATCH", path, body=obj, query=query, content_type="application/apply-patch+yaml")
        return cast(Manifest, applied)

    async def get(self, res: Resource, namespace: str | None, name: str) -> Manifest | None:
        try:
            return cast(Manifest, await self.request("GET", res.path(namespace, name)))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def delete(self, res: Resource, namespace: str | None, name: str, uid: str | None = None) -> bool:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            # Only ever delete the exact object we looked at, never a same-named successor.
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", res.path(namespace, name), body=body)
            return True
        except ApiError as err:
            if err.status in (404, 409):
                return False
            raise

    async def create(self, res: Resource, namespace: str | None, obj: Manifest) -> Manifest:
        return cast(Manifest, await self.request("POST", res.path(namespace), body=obj))

    async def list(
        self,
        res: Resource,
        limit: int = 500,
        namespace: str | None = None,
        metadata_only: bool = False,
        query: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Manifest]:
        """The pages of a list, ``limit`` objects each: memory stays bounded however many there are.
        ``metadata_only``: each object's metadata alone (PartialObjectMetadata), as client-go's
        metadata informers read: a Secret's data never leaves the API server."""
        token = ""
        accept = METADATA_LIST if metadata_only else "application/json"
        while True:
            params = {**(query or {}), "limit": str(limit)}
            if token:
                params["continue"] = token
            page = await self.request("GET", res.path(namespace), query=params, timeout=120, accept=accept)
            yield page
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    async def served(self, res: Resource) -> bool | None:
        """Does API discovery list the resource? None when discovery itself failed."""
        path = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
        try:
            doc = await self.request("GET", path, timeout=10)
        except asyncio.CancelledError:
            raise
        except ApiError as err:
            return False if err.status == 404 else None
        except Exception:
            return None
        if not isinstance(doc, dict):
            return None
        return any(isinstance(r, dict) and r.get("name") == res.plural for r in doc.get("resources") or [])

    async def watch(
        self,
        res: Resource,
        resource_version: str,
        timeout: int = 300,
        namespace: str | None = None,
        idle: float | None = None,
        opened: Callable[[], None] | None = None,
        metadata_only: bool = False,
        query: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Manifest]:
        """Yield watch events ({type, object}) until the server ends the stream.

        A stream that brings nothing, not even a bookmark, for ``idle`` seconds
        is taken for a dead (half-open) connection: WatchIdle is raised; the
        same holds for a watch whose answer does not even begin. ``opened`` is
        called once the API server has answered.
        """
        params = {
            **(query or {}),
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # arrives as the awaited result does, and a busy stream makes that likely.
        try:
            async with asyncio.timeout(idle):
                resp = await self._watches().get(
                    self.server + res.path(namespace),
                    params=list(params.items()),
                    headers=self._headers(METADATA if metadata_only else "application/json"),
                    timeout=aiohttp.ClientTimeout(total=timeout + 30),
                    allow_redirects=False,
                    **self._route,
                )
        except TimeoutError:
            raise WatchIdle(f"watch {res.path()}: no answer for {idle}s") from None
        try:
            if resp.status >= 300:
                raw = await resp.read()
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                raise ApiError(resp.status, body, "WATCH", res.path())
            if opened is not None:
                opened()
            # Lines can exceed aiohttp's readline limit: split the stream ourselves.
            buffer = b""
            while True:
                try:
                    async with asyncio.timeout(idle):
                        chunk = await resp.content.readany()
                except TimeoutError:
                    if idle is None:
                        raise
                    raise WatchIdle(f"watch {res.path()}: nothing for {idle}s") from None
                if not chunk:
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release()


class WatchIdle(Exception):
    """A watch stream went silent for longer than the server's bookmarks allow."""


async def sleep_backoff(attempt: int, base: float = 0.2, cap: float = 30.0) -> None:
    # Jittered: the informers of one operator that fail together (an API server restart) do not
    # retry in lockstep.
    await asyncio.sleep(backoff.delay(attempt, base, cap))
