"""List-then-watch caches of the objects the operator reads, so reconciles need no GETs."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from .kube import ApiError, Kube, Manifest, Resource, sleep_backoff

log = logging.getLogger(__name__)

Handler = Callable[[str, Manifest], None]


def rv_int(obj: Manifest) -> int:
    """resourceVersion as a number (etcd revisions are; anything else sorts first)."""
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:
        return 0


def strip(obj: Manifest) -> Manifest:
    """Drop what the operator never reads; managedFields alone often doubles an object."""
    meta = obj.get("metadata", {})
    meta.pop("managedFields", None)
    return obj


class Informer:
    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        handler: Handler | None = None,
        transform: Callable[[Manifest], Manifest] = strip,
        absent_retry: float = 10.0,
        **selectors: str,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.handler = handler
        self.transform = transform
        self.selectors = selectors
        self.absent_retry = absent_retry
        # Objects kept as compact JSON with their resourceVersion: a parsed dict costs
        # ten times the memory, and a reconcile parses only the few it reads.
        self.store: dict[tuple[str, str], tuple[int, bytes]] = {}
        self.synced = asyncio.Event()
        # None until the first list answers; False while the API does not serve the kind (CRD missing).
        self.available: bool | None = None
        self.on_availability: Callable[[bool], None] | None = None

    def get(self, namespace: str, name: str) -> Manifest | None:
        entry = self.store.get((namespace, name))
        return json.loads(entry[1]) if entry is not None else None

    def _put(self, key: tuple[str, str], obj: Manifest) -> None:
        self.store[key] = (rv_int(obj), json.dumps(self.transform(obj), separators=(",", ":")).encode())

    def remember(self, obj: Manifest) -> None:
        """Store an object we just wrote, unless the watch already brought a newer one."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        current = self.store.get(key)
        if current is None or rv_int(obj) >= current[0]:
            self._put(key, obj)

    def forget(self, namespace: str, name: str) -> None:
        self.store.pop((namespace, name), None)

    def _set_available(self, value: bool) -> None:
        changed = self.available is not None and self.available != value
        self.available = value
        if changed and self.on_availability:
            self.on_availability(value)

    def _apply(self, kind: str, obj: Manifest) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if kind == "DELETED":
            self.store.pop(key, None)
        else:
            current = self.store.get(key)
            # Not newer than what we hold: the echo of our own write (remembered from its
            # response) or a stale event. Nothing to store, nothing to react to.
            if current is not None and current[0] >= rv_int(obj):
                return
            self._put(key, obj)
        if self.handler:
            self.handler(kind, obj)

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                listing = await self.kube.list(self.resource, **self.selectors)
            except ApiError as err:
                if err.status == 404:
                    if self.available is not False:
                        log.info("kind=%s available=false", self.resource.kind)
                    self._set_available(False)
                    self.store.clear()
                    self.synced.set()
                    await asyncio.sleep(self.absent_retry)
                    continue
                log.warning("kind=%s list failed: %s", self.resource.kind, err)
                await sleep_backoff(attempt)
                attempt += 1
                continue
            except (TimeoutError, OSError) as err:
                log.warning("kind=%s list failed: %s", self.resource.kind, err)
                await sleep_backoff(attempt)
                attempt += 1
                continue
            self._set_available(True)
            fresh = {}
            for item in listing.get("items", []):
                item.setdefault("apiVersion", self.resource.api_version)
                item.setdefault("kind", self.resource.kind)
                meta = item["metadata"]
                fresh[(meta.get("namespace", ""), meta["name"])] = item
            gone = [key for key in self.store if key not in fresh]
            for key in gone:
                _, raw = self.store.pop(key)
                if self.handler:
                    self.handler("DELETED", json.loads(raw))
            for item in fresh.values():
                self._apply("ADDED", item)
            self.synced.set()
            attempt = 0
            await self._watch(listing["metadata"]["resourceVersion"])

    async def _watch(self, rv: str) -> None:
        """Follow changes from ``rv`` until the server says the history is gone (then relist)."""
        while True:
            try:
                async for event in self.kube.watch(self.resource, rv, **self.selectors):
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            return
                        log.warning("kind=%s watch error: %s", self.resource.kind, obj.get("message"))
                        return
                    rv = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._apply(kind, obj)
            except ApiError as err:
                if err.status in (404, 410):
                    return
                log.warning("kind=%s watch failed: %s", self.resource.kind, err)
                await sleep_backoff(1)
                return
            except (TimeoutError, OSError, ValueError) as err:
                log.warning("kind=%s watch interrupted: %s", self.resource.kind, err)
                await sleep_backoff(0)


def owner_key(obj: Manifest, kind: str = "AIModel") -> tuple[str, str] | None:
    meta = obj.get("metadata", {})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller"):
            return meta.get("namespace", ""), ref["name"]
    return None


def deep_get(obj: Any, *path: str, default: Any = None) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return default
        obj = obj[part]
    return obj
