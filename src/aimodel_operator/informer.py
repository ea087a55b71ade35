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
        optional: bool = False,
        **selectors: str,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.handler = handler
        self.transform = transform
        self.selectors = selectors
        self.absent_retry = absent_retry
        # An optional kind (KEDA's) may also be forbidden to us: that, too, means "not available".
        self.optional = optional
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
        self._notify(kind, obj)

    async def run(self) -> None:
        """List, then watch; relist when the history is gone. Never ends but by cancellation.

        Every failure backs off (growing while failures repeat), so a broken API
        server is never hammered with full lists, and no exception ends the loop:
        a dead informer would silently stop drift repair and error intake.
        """
        failures = 0
        while True:
            try:
                listing = await self.kube.list(self.resource, **self.selectors)
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                if err.status == 404 or (err.status == 403 and self.optional):
                    self._absent(err)
                    await asyncio.sleep(self.absent_retry)
                    continue
                failures += 1
                log.warning("kind=%s list failed: %s", self.resource.kind, err)
                await sleep_backoff(failures)
                continue
            except Exception as err:
                failures += 1
                log.warning("kind=%s list failed: %r", self.resource.kind, err)
                await sleep_backoff(failures)
                continue
            self._set_available(True)
            self._replace(listing.get("items", []))
            self.synced.set()
            if await self._watch(listing["metadata"]["resourceVersion"]):
                failures = 0
            else:
                failures += 1
                await sleep_backoff(failures)

    def _absent(self, err: ApiError) -> None:
        if self.available is not False:
            log.info("kind=%s available=false reason=%s", self.resource.kind, err.status)
        self._set_available(False)
        self.store.clear()
        self.synced.set()

    def _replace(self, items: list[Manifest]) -> None:
        fresh = {}
        for item in items:
            item.setdefault("apiVersion", self.resource.api_version)
            item.setdefault("kind", self.resource.kind)
            meta = item["metadata"]
            fresh[(meta.get("namespace", ""), meta["name"])] = item
        for key in [key for key in self.store if key not in fresh]:
            _, raw = self.store.pop(key)
            self._notify("DELETED", json.loads(raw))
        for item in fresh.values():
            self._apply("ADDED", item)

    def _notify(self, kind: str, obj: Manifest) -> None:
        if self.handler is None:
            return
        try:
            self.handler(kind, obj)
        except Exception:
            log.exception("kind=%s handler failed", self.resource.kind)

    async def _watch(self, rv: str) -> bool:
        """Follow changes from ``rv`` until the history is gone or the stream fails.

        True when the watch ended normally (timeout or 410 Gone: relist at once),
        False on a failure (the caller backs off before relisting).
        """
        while True:
            try:
                async for event in self.kube.watch(self.resource, rv, **self.selectors):
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            return True
                        log.warning("kind=%s watch error: %s", self.resource.kind, obj.get("message"))
                        return False
                    rv = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._apply(kind, obj)
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                if err.status == 410:
                    return True
                log.warning("kind=%s watch failed: %s", self.resource.kind, err)
                return False
            except Exception as err:
                log.warning("kind=%s watch interrupted: %r", self.resource.kind, err)
                return False


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
