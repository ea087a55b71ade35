"""A thin async layer over kubernetes_asyncio's ApiClient for plain-dict manifests.

Objects stay JSON dicts end to end: no generated model classes (they cost
memory and time for nothing here). Every write is a server-side apply under
the operator's single field manager.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubernetes_asyncio import client, config

from . import metrics
from .settings import FIELD_MANAGER

log = logging.getLogger(__name__)

Manifest = dict[str, Any]


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


async def load_configuration(context: str | None = None) -> client.Configuration:
    """In-cluster credentials when running in a pod, else the usual kubeconfig."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        # KUBECONFIG is read now, not when kubernetes_asyncio was imported.
        await config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=cfg, context=context
        )
    return cfg


WriteGate = Callable[[], float | None]


class Kube:
    """API access. ``write_gate`` says for how many more seconds writes are allowed (None: forever).

    Leader election sets it: every write, also one already on its way through
    a reconcile, is checked just before it is sent and must finish before
    the lease could be taken over.
    """

    def __init__(self, cfg: client.Configuration, pool_size: int = 64, write_gate: WriteGate | None = None) -> None:
        cfg = copy.copy(cfg)
        cfg.connection_pool_maxsize = pool_size
        self._api = client.ApiClient(cfg)
        self.write_gate = write_gate
        # Writes cancelled on their way (at shutdown): they may still land after we stopped.
        self.writes_cancelled = 0

    async def close(self) -> None:
        await self._api.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
        with_status: bool = False,
    ) -> Any:
        if method != "GET" and self.write_gate is not None:
            left = self.write_gate()
            if left is not None:
                if left <= 0:
                    raise NotLeading(f"{method} {path}: not leading")
                timeout = min(timeout, left)
        if method != "GET":
            return await self._write(method, path, body, query, content_type, timeout, with_status)
        return await self._send(method, path, body, query, content_type, timeout, with_status)

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
    ) -> Any:
        resp = await self._api.call_api(
            path,
            method,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        try:
            raw = await resp.read()
        finally:
            resp.release()
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
        return await self.request("PATCH", path, body=obj, query=query, content_type="application/apply-patch+yaml")

    async def get(self, res: Resource, namespace: str | None, name: str) -> Manifest | None:
        try:
            return await self.request("GET", res.path(namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def delete(self, res: Resource, namespace: str | None, name: str, uid: str | None = None) -> bool:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
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
        return await self.request("POST", res.path(namespace), body=obj)

    async def list(
        self, res: Resource, limit: int = 500, namespace: str | None = None, **query: str
    ) -> AsyncIterator[Manifest]:
        """The pages of a list, ``limit`` objects each: memory stays bounded however many there are."""
        token = ""
        while True:
            params = {**query, "limit": str(limit)}
            if token:
                params["continue"] = token
            page = await self.request("GET", res.path(namespace), query=params, timeout=120)
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
        **query: str,
    ) -> AsyncIterator[Manifest]:
        """Yield watch events ({type, object}) until the server ends the stream.

        A stream that brings nothing, not even a bookmark, for ``idle`` seconds
        is taken for a dead (half-open) connection: WatchIdle is raised; the
        same holds for a watch whose answer does not even begin. ``opened`` is
        called once the API server has answered.
        """
        params = {
            **query,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # arrives as the awaited result does, and a busy stream makes that likely.
        try:
            async with asyncio.timeout(idle):
                resp = await self._api.call_api(
                    res.path(namespace),
                    "GET",
                    query_params=list(params.items()),
                    header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _request_timeout=timeout + 30,
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
    await asyncio.sleep(min(cap, base * (2 ** min(attempt, 10))))
