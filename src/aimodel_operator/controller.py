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

from . import builders, caches, conditions, metrics, watches
from . import status as status_mod
from .announcer import Announcer
from .background import Background
from .builders import Capabilities
from .children import ChildApplier
from .config import Tenancy
from .intake import Intake
from .kube import AIMODELS, SCALED_OBJECTS, ApiError, Kube, NotLeading
from .logs import fields
from .loop import DONE, Failed, Loop, Result
from .objects import Key, Manifest
from .pulsar_auth.admin import PulsarAdminError
from .pulsar_auth.credentials import Issued
from .recorder import Recorder
from .refs import SecretRefs
from .settings import Settings
from .statusview import StatusView
from .statuswriter import StatusWriter, Written
from .tenants import PULSAR_ADMIN_UNAVAILABLE, Tenants
from .watches import CHILDREN, WATCHES, Route, Speed, Watch
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

# A name taken by someone else, or held by a deleted namesake, is looked at again (a read, never a
# write) after 0.5 s, 1 s, 2 s, ... and at most this far apart.
LOOK_AGAIN_MAX_SECONDS = 30.0
# A reconcile refused by the leader's write fence is tried again after about a renewal period.
NOT_LEADING_RETRY_SECONDS = 2.0


class Controller:
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
        # Per AIModel whose children were all in place at the last reconcile: the model's
        # resourceVersion then, and the problem its status showed. Until something the children
        # depend on changes (an event at Speed.FULL), a report or a pod change only needs the status written.
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

    # -- the reconcile -----------------------------------------------------------

    async def reconcile(self, key: Key) -> Result:
        """Reconcile one AIModel; the result says when to look at it again (loop.py). Raises for
        what is to be retried with growing pauses."""
        try:
            # A model's own Pulsar tokens are renewed on time, whatever else the reconcile found.
            return self.tenants.on_time(key, await self._reconcile(key))
        except Exception as err:
            cause = err.cause if isinstance(err, Failed) else err
            if isinstance(cause, NotLeading):
                # Refused by the write fence: if leadership is really lost the process stops; if
                # not (a renewal is on its way), the work must not be dropped.
                log.debug("not leading: reconcile put off", extra=fields(namespace=key[0], name=key[1]))
                return Result(requeue_after=NOT_LEADING_RETRY_SECONDS)
            if isinstance(cause, ApiError) and cause.namespace_terminating:
                # The namespace, and with it the model, is going away: no retry, no noise.
                log.debug("namespace terminating", extra=fields(namespace=key[0], name=key[1]))
                return DONE
            raise

    async def _reconcile(self, key: Key) -> Result:
        model = self.models.get(*key)
        if model is None or model["metadata"].get("deletionTimestamp"):
            return DONE
        settled = None if self.tenants.renewal_due(key) else self._settled.get(key)
        if settled is not None and settled[0] == model["metadata"].get("resourceVersion"):
            # Only a report or the workers' pods changed: the status is all there is to write.
            return await self._write_status(key, model, settled[1])
        await self.refs.load(model)
        ref_hash = self.refs.key_hash(model)
        started = None
        if ref_hash is None and builders.spec_of(model).get("apiKeySecretRef"):
            started = builders.started_secret_hash(self.view.deployment(model))
        held = self.tenants.held_elsewhere(model)
        if held is not None:
            # Another namespace holds the model name: no workers, no queue credential, no scaling.
            desired = builders.access_children(model)
            self.tenants.forget(key)
        else:
            model_tokens = None
            if self.tenants.credentials is not None:
                model_tokens = (await self._credentials(key, model)).tokens
            desired = builders.children(model, self.settings, self.caps, ref_hash, started, model_tokens)
        outcome = await self.applier.apply_all(model, desired)
        removed: list[str] = []
        if outcome.complete:
            # Only once everything wanted is in place: a Deployment still using the Secret being
            # replaced must not lose it because its successor was refused.
            removed = await self.applier.remove_stale(model, {(c["kind"], c["metadata"]["name"]) for c in desired})
        if outcome.applied or removed:
            self.announcer.changed(model, outcome.applied, removed)
        problem = (
            held
            or conditions.child_conflicts(outcome.conflicts)
            or conditions.apply_failed(outcome.refused)
            or conditions.not_applied(outcome.missing, outcome.errors)
            or conditions.api_key_secret(model, self.refs.keys(model))
        )
        if outcome.complete:
            self._settled[key] = (model["metadata"].get("resourceVersion", ""), problem)
        else:
            self._settled.pop(key, None)
        result = await self._write_status(key, model, problem)
        if outcome.errors:
            raise Failed(outcome.errors[0], result.requeue_after)
        if outcome.conflicts or outcome.pending:
            # Nothing tells us when a stranger's object goes away (it is not in our caches), nor
            # when garbage collection is done with a namesake's: look again (reads only, the
            # conflict already said in status), with growing pauses.
            return Result(requeue_after=result.requeue_after, backoff_cap=LOOK_AGAIN_MAX_SECONDS)
        return result

    async def _credentials(self, key: Key, model: Manifest) -> Issued:
        """The model's Pulsar grants made and its tokens (kept while good); when the Pulsar admin
        fails, the status says so and the reconcile is retried (nothing applied meanwhile)."""
        meta = model["metadata"]
        secret = self.children["Secret"].get(meta["namespace"], builders.secret_name(meta["name"]))
        try:
            return await self.tenants.issue(key, model, secret)
        except PulsarAdminError as err:
            self._settled.pop(key, None)
            problem = status_mod.Condition(status_mod.READY, False, PULSAR_ADMIN_UNAVAILABLE, str(err))
            result = await self._write_status(key, model, problem)
            raise Failed(err, result.requeue_after) from err

    async def _write_status(self, key: Key, model: Manifest, problem: status_mod.Condition | None) -> Result:
        new, again = self.view.compute(key, model, problem)
        result, answer, again_in = await self.status_writer.write(key, model, new)
        if result is Written.STALE:
            return (await self._refresh(key)).sooner(again)
        if result is Written.WRITTEN:
            self.announcer.written(key, model, new)
            if answer is not None:
                self.models.remember(answer)
                settled = self._settled.get(key)
                if settled is not None:
                    # Our own status write changed nothing the children are built from.
                    self._settled[key] = (answer["metadata"].get("resourceVersion", ""), settled[1])
        return Result(requeue_after=again_in).sooner(again)

    async def _refresh(self, key: Key) -> Result:
        """The AIModel is not what we read: read it (the watch may lag), forget it if it is gone.

        Read with a list narrowed to its name: the operator's RBAC grants list and watch on
        AIModels, not get (a GET here was refused with 403 under config/default's RBAC).
        """
        live = await self.kube.find(AIMODELS, *key)
        if live is None:
            # Gone: whatever the watch missed, forget it now.
            log.info("gone", extra=fields(namespace=key[0], name=key[1]))
            self._model_gone(key)
            return DONE
        if self.models.remember(live):
            # What the watch has not brought yet: reconciled again in full, at once.
            self._settled.pop(key, None)
            metrics.MODELS.set(len(self.models))
            return Result(requeue_after=0)
        # The cache already holds what the API has: try again a little later.
        return Result(backoff_cap=LOOK_AGAIN_MAX_SECONDS)
