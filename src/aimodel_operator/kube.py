"""A thin async layer over kubernetes_asyncio's ApiClient for plain-dict manifests.

Objects stay JSON dicts end to end: no generated model classes (they cost
memory and time for nothing here). Every write is a server-side apply under
the operator's single field manager.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
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
        message = body.get("message") if isinstance(body, dict) else str(body)[:300]
        super().__init__(f"{method} {path}: HTTP {status}: {message}")

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
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        if subresource:
            base += f"/{subresource}"
        return base


DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
SECRETS = Resource("", "v1", "secrets", "Secret")
EVENTS = Resource("", "v1", "events", "Event")
SCALED_OBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
TRIGGER_AUTHS = Resource("keda.sh", "v1alpha1", "triggerauthentications", "TriggerAuthentication")
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


class Kube:
    def __init__(self, cfg: client.Configuration, pool_size: int = 64) -> None:
        cfg.connection_pool_maxsize = pool_size
        self._api = client.ApiClient(cfg)

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

    async def list(self, res: Resource, **query: str) -> Manifest:
        return await self.request("GET", res.path(), query=query, timeout=120)

    async def watch(
        self, res: Resource, resource_version: str, timeout: int = 300, namespace: str | None = None, **query: str
    ) -> AsyncIterator[Manifest]:
        """Yield watch events ({type, object}) until the server ends the stream."""
        params = {
            **query,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        resp = await self._api.call_api(
            res.path(namespace),
            "GET",
            query_params=list(params.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout + 30,
        )
        try:
            if resp.status >= 300:
                raw = await resp.read()
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                raise ApiError(resp.status, body, "WATCH", res.path())
            # Lines can exceed aiohttp's readline limit: split the stream ourselves.
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release()


async def sleep_backoff(attempt: int, base: float = 0.2, cap: float = 30.0) -> None:
    await asyncio.sleep(min(cap, base * (2 ** min(attempt, 10))))
