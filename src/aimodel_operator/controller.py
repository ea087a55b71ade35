"""The one reconcile path: read the caches, compute the desired children, apply what differs, write status.

Creation, spec changes, drift of a child, a worker's report, a referenced
Secret appearing, KEDA appearing, an operator restart and the periodic
resync all end up here, as a key in the work queue. A reconcile that finds
nothing to change writes nothing. Every kind, AIModels included, is read
through the same informer machinery (informer.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from . import builders, caches, metrics, watches
from . import status as status_mod
from .announcer import Announcer
from .background import Background
from .builders import Capabilities
from .children import ChildApplier
from .config import Tenancy
from .intake import Intake
from .kube import SCALED_OBJECTS, Kube
from .logs import fields
from .loop import Loop
from .objects import Key, Manifest
from .reconciler import Reconciler
from .recorder import Recorder
from .refs import SecretRefs
from .settings import Settings
from .statusview import StatusView
from .statuswriter import StatusWriter
from .tenants import Tenants
from .watches import CHILDREN, WATCHES, Route, Speed, Watch
from .workqueue import WorkQueue

log = logging.getLogger(__name__)


class Controller(Reconciler):
    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        instance: str = "",
        workers: int = 32,
        resync: float = 300,
        watch_idle: float | None = 90.0,
        namespaces: tuple[str, ...] = (),
        status_writes_per_second: float = 100.0,
        tenancy: Tenancy | None = None,
    ) -> None:
        """``namespaces``: watch only these (every kind, Secrets included); empty: all of them.
        ``tenancy``: sign a token per model and grant it (pulsar_auth)."""
        self.kube = kube
        self.settings = settings
        self.workers = workers
        self.resync = resync
        self.queue = WorkQueue()
        # A worker's report goes ahead of everything else queued.
        self.intake = Intake(lambda key: self._enqueue(key, Speed.URGENT), known=lambda key: key in self.models)
        self.recorder = Recorder(kube, instance)
        # Every cache and where its changes go: the table in watches.py.
        self.caches = {w.name: watches.informer(w, kube, self._handler(w), namespaces, watch_idle) for w in WATCHES}
        self.models = self.caches["models"]
        self.children = {w.resource.kind: self.caches[w.name] for w in CHILDREN}
        self.secret_names = self.caches["secret_names"]
        self.replica_sets = self.caches["replica_sets"]
        self.pods = self.caches["pods"]
        self.refs = SecretRefs(kube, self.secret_names)
        self.children[SCALED_OBJECTS.kind].on_availability = self._keda_availability
        self.applier = ChildApplier(kube, self.children)
        rate = status_writes_per_second
        self.status_writer = StatusWriter(kube, writes_per_second=rate, burst=int(2 * rate))
        self.models.add_index(caches.BY_SECRET_REF, caches.secret_ref, emptied=self._secret_unreferenced)
        self.tenants = Tenants(
            self.models,
            settings.res_topic_name,
            settings.pulsar_admin_url,
            tenancy,
            lambda key: self._enqueue(key, Speed.FULL),
        )
        self.synced = asyncio.Event()
        self.announcer = Announcer(self.recorder)
        self.view = StatusView(self.children, self.replica_sets, self.pods, self.intake, settings, lambda: self.caps)
        # Per AIModel settled at its last reconcile (reconciler.py says what it means).
        self._settled: dict[Key, tuple[str, status_mod.Condition | None]] = {}
        self.background = Background()
        self._begin_task: asyncio.Task[Any] | None = None

    def _handler(self, watch: Watch) -> Callable[[str, Manifest], None]:
        if watch.route is not None:
            return functools.partial(self._routed, watch.route, watch.speed)
        own = {"models": self._model_event, "events": self.intake.handle}
        if watch.name not in own:
            raise ValueError(f"watch {watch.name!r} has neither a route nor a handler of its own")
        return own[watch.name]

    def _routed(self, route: Route, speed: Speed, kind: str, obj: Manifest) -> None:
        for key in route(kind, obj, self.models):
            if key in self.models:
                self._enqueue(key, speed)

    def _enqueue(self, key: Key, speed: Speed) -> None:
        """Reconcile ``key`` at ``speed`` (watches.py): FULL forgets that its children were settled."""
        if speed is Speed.FULL:
            self._settled.pop(key, None)
        (self.queue.add_urgent if speed is Speed.URGENT else self.queue.add)(key)

    # -- inputs ------------------------------------------------------------------

    def _model_event(self, kind: str, obj: Manifest) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if kind == "DELETED":
            self._model_gone(key)
            return
        metrics.MODELS.set(len(self.models))
        self._enqueue(key, Speed.FULL)

    def _model_gone(self, key: Key) -> None:
        self.tenants.forget(key)
        self.announcer.forget(key)
        self._settled.pop(key, None)
        self.models.forget(*key)
        self.queue.drop(key)
        self.status_writer.forget(key)
        self.intake.drop(key)
        self.applier.forget(key)
        metrics.MODELS.set(len(self.models))

    def _secret_unreferenced(self, value: str) -> None:
        """No AIModel references this Secret anymore: its hashed values are not kept."""
        namespace, _, name = value.partition("/")
        self.refs.forget((namespace, name))

    def _keda_availability(self, available: bool) -> None:
        log.info("keda", extra=fields(available=available))
        for key in self.models:
            model = self.models.get(*key)
            if model is not None and builders.wants_autoscaling(model):
                self._enqueue(key, Speed.FULL)

    @property
    def caps(self) -> Capabilities:
        return Capabilities(keda=self.children[SCALED_OBJECTS.kind].available is True)

    # -- running -----------------------------------------------------------------

    async def start(self, gate: asyncio.Event | None = None) -> None:
        """Fill the caches, then reconcile once ``gate`` (leadership) is set.

        No reconcile runs before every cache is synced: a reconcile on a
        half-filled cache would find children missing that exist, or forget
        reports that were made.
        """
        self.recorder.start()
        for i in self.caches.values():
            self.background.spawn(i.run(), f"informer-{i.resource.kind}")
        await asyncio.gather(*(i.synced.wait() for i in self.caches.values()))
        self.synced.set()
        log.info("caches synced", extra=fields(models=len(self.models)))
        # Kept apart from the tasks that must run forever: this one ends once workers are started.
        self._begin_task = asyncio.create_task(self._begin(gate), name="begin")

    async def _begin(self, gate: asyncio.Event | None) -> None:
        if gate is not None:
            await gate.wait()
        loop = Loop(self.queue, self.reconcile, self._on_failure, gate=gate, ready=self.models.current)
        for n in range(self.workers):
            self.background.spawn(loop.run(), f"worker-{n}")
        self.background.spawn(self._resync(), "resync")
        if self.tenants.credentials is not None:
            self.background.spawn(self.tenants.collect_forever(), "pulsar-grants")

    def failed_tasks(self) -> list[str]:
        """Background tasks that ended: none should, so any is a reason to restart the operator."""
        return self.background.ended() + [t.get_name() for t in self.recorder.tasks if t.done()]

    async def stop(self) -> None:
        if self._begin_task is not None:
            self._begin_task.cancel()
        await self.background.stop()
        await self.tenants.close()
        # Events already queued are still sent (briefly), unless leadership is gone.
        await self.recorder.stop()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            started = time.process_time()
            self.intake.prune(self.models.__contains__)
            keys = list(self.models)
            for key in keys:
                self._enqueue(key, Speed.FULL)
            log.info("resync", extra=fields(models=len(keys)))
            metrics.RESYNC_CPU_SECONDS.inc(time.process_time() - started)

    def _on_failure(self, key: Key, err: Exception, delay: float, first: bool) -> None:
        log.warning(
            "reconcile failed", extra=fields(namespace=key[0], name=key[1], retry_in=round(delay, 1), error=str(err))
        )
        model = self.models.get(*key)
        if model is not None and first:
            self.recorder.event(model, "Warning", "ReconcileError", str(err))
