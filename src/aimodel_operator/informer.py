"""List-then-watch caches: the one machinery through which the operator reads every kind.

An informer lists (page by page), then watches from the list's
resourceVersion, and lists again when the watch history is gone, the stream
fails or goes silent. A relist reports as DELETED whatever vanished while no
watch was running, so nothing that is gone stays in memory. Objects are kept
as compact JSON; a kind that needs no cache (Events) keeps nothing at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping

from .kube import ApiError, Forbidden, Gone, Kube, NotFound, Resource, WatchIdle, describe, sleep_backoff
from .logs import fields
from .objects import Key, Manifest, key_of
from .store import Indexer, Store, Transform, rv_int, strip

__all__ = ["ABSENCE_CONFIRMATIONS", "Handler", "Indexer", "Informer", "Transform", "rv_int", "strip"]

log = logging.getLogger(__name__)

Handler = Callable[[str, Manifest], None]

# How many times in a row discovery must say that an optional kind is gone
# (at ``absent_retry`` intervals) before a kind that was served is taken as uninstalled.
ABSENCE_CONFIRMATIONS = 3


class Informer(Store):
    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        handler: Handler | None = None,
        transform: Transform = strip,
        absent_retry: float = 10.0,
        optional: bool = False,
        keep: bool = True,
        idle: float | None = 90.0,
        page_size: int = 500,
        namespace: str | None = None,
        metadata_only: bool = False,
        selectors: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(transform)
        self.kube = kube
        self.resource = resource
        self.handler = handler
        # labelSelector / fieldSelector of every list and watch.
        self.selectors = dict(selectors or {})
        # Only each object's metadata is read (PartialObjectMetadata): for kinds whose content
        # the operator must not hold, such as every Secret in the cluster.
        self.metadata_only = metadata_only
        # One namespace only (scoped.py puts several together); None: all of them.
        self.namespace = namespace
        self.absent_retry = absent_retry
        # An optional kind (KEDA's) may be missing from the API, or forbidden to us.
        self.optional = optional
        # Without a cache, a relist delivers every object again as ADDED and reports no deletions.
        self.keep = keep
        self.idle = idle
        self.page_size = page_size
        self.synced = asyncio.Event()
        # Set while the cache is current: listed and followed by a live watch. Cleared from the
        # moment a watch fails until the relist that follows it is complete.
        self.current = asyncio.Event()
        # None until decided; False while the API does not serve the kind (CRD missing).
        self.available: bool | None = None
        self.on_availability: Callable[[bool], None] | None = None
        self._absent_seen = 0
        self.relists = 0

    # -- events --------------------------------------------------------------------

    def _apply(self, kind: str, obj: Manifest) -> None:
        key = key_of(obj)
        if kind == "DELETED":
            current = self.store.get(key)
            if self.keep and (current is None or current[0] > rv_int(obj)):
                # Not cached, or what is cached is newer than the deletion: a successor.
                return
            self._drop(key)
        elif self.keep:
            current = self.store.get(key)
            # Not newer than what we hold: the echo of our own write (remembered from its
            # response) or a stale event. Nothing to store, nothing to react to.
            if current is not None and current[0] >= rv_int(obj):
                return
            encoded = self._put(key, obj)
            if current is not None and current[1] == encoded[1]:
                # Newer, but nothing the operator keeps of it changed (a transform without the
                # resourceVersion, e.g. a pod's): nothing to react to.
                return
        self._notify(kind, obj)

    def _notify(self, kind: str, obj: Manifest) -> None:
        if self.handler is None:
            return
        try:
            self.handler(kind, obj)
        except Exception:
            log.exception("handler failed", extra=fields(kind=self.resource.kind))

    def _set_available(self, value: bool) -> None:
        changed = self.available is not None and self.available != value
        self.available = value
        if changed and self.on_availability:
            self.on_availability(value)

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch; relist when the history is gone. Never ends but by cancellation.

        Every failure backs off (growing while failures repeat), so a broken API
        server is never hammered with full lists, and no exception ends the loop:
        a dead informer would silently stop drift repair and error intake.
        """
        failures = 0
        while True:
            try:
                rv = await self._list()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if self.optional and isinstance(err, (Forbidden, NotFound)):
                    try:
                        if await self._confirm_absent(err):
                            await asyncio.sleep(self.absent_retry / ABSENCE_CONFIRMATIONS)
                            continue
                    except asyncio.CancelledError:
                        raise
                    except Exception as check:
                        log.warning(
                            "absence check failed", extra=fields(kind=self.resource.kind, error=describe(check))
                        )
                failures += 1
                log.warning("list failed", extra=fields(kind=self.resource.kind, error=str(err)))
                await sleep_backoff(failures)
                continue
            listed = asyncio.get_running_loop().time()
            self._absent_seen = 0
            self._set_available(True)
            self.synced.set()
            ok = await self._watch(rv)
            # A failed watch, or a history gone again right after a list, backs off; a list
            # that was followed by a long watch starts counting afresh.
            quick = asyncio.get_running_loop().time() - listed < 5
            failures = failures + 1 if (not ok or quick) else 0
            if failures:
                await sleep_backoff(failures)

    async def _confirm_absent(self, err: ApiError) -> bool:
        """Is the kind really not there for us? True once that is decided (or being confirmed).

        One failed list proves nothing (an API server restarting, a webhook, a
        proxy). A 404 counts only when discovery agrees that the kind is not
        served; a 403 (our RBAC does not cover the kind) only when it repeats.
        A kind never seen is given up after one discovery answer; a kind that
        was served only after ``ABSENCE_CONFIRMATIONS`` in a row, so a blip
        never takes KEDA away from the models it scales.
        """
        if isinstance(err, NotFound):
            served = await self.kube.served(self.resource)
            if served is None or served:
                self._absent_seen = 0
                return False
        self._absent_seen += 1
        needed = 1 if (self.available is None and isinstance(err, NotFound)) else ABSENCE_CONFIRMATIONS
        if self._absent_seen < needed:
            log.info(
                "list refused",
                extra=fields(kind=self.resource.kind, status=err.status, absence_seen=f"{self._absent_seen}/{needed}"),
            )
            return True
        if self.available is not False:
            log.info("kind unavailable", extra=fields(kind=self.resource.kind, available=False, status=err.status))
        for key in list(self.store):
            _, raw = self._drop(key) or (0, b"")
            self._notify("DELETED", json.loads(raw))
        self._set_available(False)
        self.synced.set()
        self.current.set()
        return True

    async def _list(self) -> str:
        """List every page into the cache; report what changed and what is gone. Returns the list's resourceVersion.

        Pages are applied as they come, so a list of any size never exists in
        memory at once; what was not listed is gone and reported DELETED.
        """
        seen: set[Key] = set()
        rv = ""
        async for page in self.kube.list(
            self.resource,
            limit=self.page_size,
            namespace=self.namespace,
            metadata_only=self.metadata_only,
            query=self.selectors,
        ):
            rv = page["metadata"]["resourceVersion"]
            for item in page.get("items") or []:
                item.setdefault("apiVersion", self.resource.api_version)
                item.setdefault("kind", self.resource.kind)
                if self.keep:
                    seen.add(key_of(item))
                self._apply("ADDED", item)
        self.relists += 1
        # Not listed and not newer than the list: gone. An object newer than the list's snapshot
        # (remembered from a write made meanwhile) is not; the watch from the list brings it.
        list_rv = int(rv) if rv.isdigit() else 0
        for key in [key for key, (obj_rv, _) in self.store.items() if key not in seen and obj_rv <= list_rv]:
            _, raw = self._drop(key) or (0, b"")
            self._notify("DELETED", json.loads(raw))
        return rv

    async def _watch(self, rv: str) -> bool:
        """Follow changes from ``rv`` until the history is gone or the stream fails.

        True when the watch ended normally (410 Gone: relist at once), False on
        a failure (the caller backs off before relisting). A stream the server
        ends, or one that stays silent past ``idle``, is watched again from
        the last resourceVersion seen: nothing is missed, nothing relisted.
        """
        while True:
            try:
                async for event in self.kube.watch(
                    self.resource,
                    rv,
                    namespace=self.namespace,
                    idle=self.idle,
                    opened=self.current.set,
                    metadata_only=self.metadata_only,
                    query=self.selectors,
                ):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            return True
                        log.warning("watch error", extra=fields(kind=self.resource.kind, error=obj.get("message")))
                        return False
                    if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                        log.warning("unexpected watch event", extra=fields(kind=self.resource.kind, type=repr(kind)))
                        return False
                    rv = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        obj.setdefault("apiVersion", self.resource.api_version)
                        obj.setdefault("kind", self.resource.kind)
                        self._apply(kind, obj)
            except asyncio.CancelledError:
                raise
            except WatchIdle as err:
                log.info("watching again", extra=fields(kind=self.resource.kind, why=str(err)))
                continue
            except Gone:
                return True
            except ApiError as err:
                log.warning("watch failed", extra=fields(kind=self.resource.kind, error=str(err)))
                return False
            except Exception as err:
                log.warning("watch interrupted", extra=fields(kind=self.resource.kind, error=describe(err)))
                return False
            finally:
                # Not current from the moment a watch ends until the next one has answered.
                self.current.clear()
