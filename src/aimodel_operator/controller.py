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

from . import builders, caches, conditions, metrics
from . import status as status_mod
from .api import DEFAULT_API_KEY_SECRET_KEY
from .builders import Capabilities
from .children import ChildApplier
from .informer import Informer
from .intake import Intake
from .kube import (
    AIMODELS,
    DEPLOYMENTS,
    SCALED_OBJECTS,
    ApiError,
    Kube,
    NotLeading,
    Resource,
)
from .logs import fields
from .loop import DONE, Failed, Loop, Result
from .objects import Key, Manifest, is_controlled_by
from .recorder import Recorder
from .refs import SecretRefs
from .scoped import Scoped
from .settings import Settings
from .statuswriter import StatusWriter, Written
from .watches import CHILDREN, WATCHES, Speed, Watch
from .workers import grace_left, summarize
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
    ) -> None:
        """``namespaces``: watch only these (every kind, Secrets included); empty: all of them."""
        self.kube = kube
        self.namespaces = namespaces
        self.settings = settings
        self.workers = workers
        self.resync = resync
        self.queue = WorkQueue()
        # A worker's report goes ahead of everything else queued.
        self.intake = Intake(lambda key: self._enqueue(key, Speed.URGENT), known=lambda key: key in self.models)
        self.recorder = Recorder(kube, instance)
        # Every cache and where its changes go: the table in watches.py.
        informer = functools.partial(self._informer, kube, watch_idle)
        self.caches: dict[str, Informer | Scoped] = {
            w.name: informer(w.resource, self._handler(w), w.transform, **w.options, **w.selector) for w in WATCHES
        }
        self.models = self.caches["models"]
        self.children = {w.resource.kind: self.caches[w.name] for w in CHILDREN}
        self.secret_names = self.caches["secret_names"]
        self.replica_sets = self.caches["replica_sets"]
        self.pods = self.caches["pods"]
        self.refs = SecretRefs(kube, self.secret_names)
        self.children[SCALED_OBJECTS.kind].on_availability = self._keda_availability
        self.applier = ChildApplier(kube, self.children)
        self.status_writer = StatusWriter(
            kube,
            writes_per_second=status_writes_per_second,
            burst=int(2 * status_writes_per_second),
        )
        # Indexes kept by the informers with their caches (forgetting an object forgets it there).
        self.models.add_index(caches.BY_SECRET_REF, caches.secret_ref, emptied=self._secret_unreferenced)
        self.replica_sets.add_index(caches.BY_MODEL, caches.of_model)
        self.pods.add_index(caches.BY_MODEL, caches.of_model)
        self.synced = asyncio.Event()
        # Per AIModel, the condition types whose problem its status has shown since they were last good.
        self._troubled: dict[Key, frozenset[str]] = {}
        # Per AIModel whose children were all in place at the last reconcile: the model's
        # resourceVersion then, and the problem its status showed. Until something the children
        # depend on changes (an event at Speed.FULL), a report or a pod change only needs the status written.
        self._settled: dict[Key, tuple[str, status_mod.Condition | None]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._gate: asyncio.Event | None = None
        self._begin_task: asyncio.Task[Any] | None = None

    def _informer(
        self, kube: Kube, idle: float | None, res: Resource, handler: Any, transform: Any, **options: Any
    ) -> Informer | Scoped:
        """An informer of ``res`` over every namespace, or one per watched namespace read as one."""
        if not self.namespaces:
            return Informer(kube, res, handler, transform, idle=idle, **options)
        return Scoped(
            lambda ns: Informer(kube, res, handler, transform, idle=idle, namespace=ns, **options), self.namespaces
        )

    @property
    def informers(self) -> list[Informer | Scoped]:
        return list(self.caches.values())

    def _handler(self, watch: Watch) -> Callable[[str, Manifest], None]:
        if watch.route is not None:
            return functools.partial(self._routed, watch)
        return self.intake.handle if watch.speed is Speed.URGENT else self._model_event

    def _routed(self, watch: Watch, kind: str, obj: Manifest) -> None:
        assert watch.route is not None
        for key in watch.route(kind, obj, self.models):
            if key in self.models:
                self._enqueue(key, watch.speed)

    def _enqueue(self, key: Key, speed: Speed) -> None:
        """Reconcile ``key`` at ``speed`` (watches.py): FULL forgets that its children were settled."""
        if speed is Speed.FULL:
            self._settled.pop(key, None)
        if speed is Speed.URGENT:
            self.queue.add_urgent(key)
        else:
            self.queue.add(key)

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
        self._troubled.pop(key, None)
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

    def _revisions(self, key: Key) -> dict[str, int]:
        """The Deployment revision of each of the model's ReplicaSets, to tell replaced pods' reports."""
        out = {}
        for rs_key in self.replica_sets.by_index(caches.BY_MODEL, caches.index_value(key)):
            rs = self.replica_sets.get(*rs_key)
            if rs is not None:
                out[rs_key[1]] = caches.revision(rs)
        return out

    def _workers(
        self, key: Key, deployment: Manifest | None, revisions: dict[str, int]
    ) -> tuple[status_mod.Condition | None, float | None]:
        """The WorkersAvailable condition, from the kept pods of the current ReplicaSet, and the
        seconds after which it must be computed again though no event may come (None: when one does)."""
        if deployment is None:
            return None, None
        pods = [
            p
            for k in self.pods.by_index(caches.BY_MODEL, caches.index_value(key))
            if (p := self.pods.get(*k)) is not None
        ]
        current = max(revisions, key=revisions.__getitem__) if revisions else None
        dep_status = deployment.get("status") or {}
        desired = int((deployment.get("spec") or {}).get("replicas", dep_status.get("replicas") or 0))
        ready = int(dep_status.get("readyReplicas") or 0)
        now = time.time()
        left = grace_left(pods, now)
        # A crashed container running again is taken for a crash loop for a while; no pod event
        # will say when that while is over.
        again = None if left is None else left + 1
        return summarize(desired, ready, dep_status.get("problems") or [], pods, current, now), again

    @staticmethod
    def _replaced(revisions: dict[str, int], deployment: Manifest | None) -> Callable[[str], bool]:
        """Which ReplicaSets' pods may not speak for the current spec.

        Those older than the newest ReplicaSet; and while the Deployment's rollout is not yet
        observed, or its revision's ReplicaSet not yet seen, every one: a report naming a pod
        waits until it is known whether that pod runs the current template.
        """
        newest = max(revisions.values(), default=0)
        if deployment is not None:
            meta, dep_status = deployment["metadata"], deployment.get("status") or {}
            unobserved = int(dep_status.get("observedGeneration") or 0) < int(meta.get("generation") or 0)
            if unobserved or caches.revision(deployment) > newest:
                return lambda rs: True
        return lambda rs: rs in revisions and revisions[rs] < newest

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
        self._tasks = [asyncio.create_task(i.run(), name=f"informer-{i.resource.kind}") for i in self.informers]
        self._tasks += self.recorder.tasks
        await asyncio.gather(*(i.synced.wait() for i in self.informers))
        self.synced.set()
        log.info("caches synced", extra=fields(models=len(self.models)))
        # Kept apart from the tasks that must run forever: this one ends once workers are started.
        self._begin_task = asyncio.create_task(self._begin(gate), name="begin")

    async def _begin(self, gate: asyncio.Event | None) -> None:
        self._gate = gate
        if gate is not None:
            await gate.wait()
        loop = Loop(self.queue, self.reconcile, self._on_failure, gate=gate, ready=self.models.current)
        self._tasks += [asyncio.create_task(loop.run(), name=f"worker-{n}") for n in range(self.workers)]
        self._tasks.append(asyncio.create_task(self._resync(), name="resync"))

    def failed_tasks(self) -> list[str]:
        """Background tasks that ended: none should, so any is a reason to restart the operator."""
        return [t.get_name() for t in self._tasks if t.done()]

    async def stop(self) -> None:
        if self._begin_task is not None:
            self._begin_task.cancel()
        own = [t for t in self._tasks if t not in self.recorder.tasks]
        for task in own:
            task.cancel()
        if own:
            _, pending = await asyncio.wait(own, timeout=5)
            if pending:
                log.warning("tasks not ending: %s", ", ".join(sorted(t.get_name() for t in pending)))
                for task in pending:
                    log.warning("task %s stack: %s", task.get_name(), task.get_stack(limit=5))
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
            return await self._reconcile(key)
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
        settled = self._settled.get(key)
        if settled is not None and settled[0] == model["metadata"].get("resourceVersion"):
            # Only a report or the workers' pods changed: the status is all there is to write.
            return await self._write_status(key, model, settled[1])
        await self.refs.load(model)
        ref_hash = self._ref_hash(model)
        started = None
        if ref_hash is None and builders.spec_of(model).get("apiKeySecretRef"):
            started = self._started_hash(model)
        desired = builders.children(model, self.settings, self.caps, ref_hash, started)
        outcome = await self.applier.apply_all(model, desired)
        removed: list[str] = []
        if outcome.complete:
            # Only once everything wanted is in place: a Deployment still using the Secret being
            # replaced must not lose it because its successor was refused.
            removed = await self.applier.remove_stale(model, {(c["kind"], c["metadata"]["name"]) for c in desired})
        if outcome.applied or removed:
            self._record_changes(model, outcome.applied, removed)
        problem = (
            conditions.child_conflicts(outcome.conflicts)
            or conditions.apply_failed(outcome.refused)
            or conditions.not_applied(outcome.missing, outcome.errors)
            or conditions.api_key_secret(model, self._secret_keys(model))
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

    def _referenced_secret(self, model: Manifest) -> dict[str, str] | None:
        """The hashed values of the Secret ``apiKeySecretRef`` names (None without a reference or when missing)."""
        ref = builders.spec_of(model).get("apiKeySecretRef")
        if not ref:
            return None
        return self.refs.values(model["metadata"]["namespace"], ref["name"])

    def _ref_hash(self, model: Manifest) -> str | None:
        """A hash of the value behind ``apiKeySecretRef``, so that a rotated key rolls the workers.

        None without a reference, or while the Secret or its key is missing (see _started_hash).
        """
        secret = self._referenced_secret(model)
        if secret is None:
            return None
        return secret.get(builders.spec_of(model)["apiKeySecretRef"].get("key", DEFAULT_API_KEY_SECRET_KEY))

    def _started_hash(self, model: Manifest) -> str | None:
        """The secret hash the workers' pods were started with. While the referenced key is missing
        they keep running on the key they have: new pods could not start, so none are rolled."""
        meta = model["metadata"]
        current = self.children[DEPLOYMENTS.kind].get(meta["namespace"], builders.deployment_name(meta["name"]))
        if current is None or not is_controlled_by(current, meta["uid"]):
            return None
        annotations = (current["spec"]["template"].get("metadata") or {}).get("annotations") or {}
        return annotations.get(builders.ANNOTATION_SECRET_HASH)

    def _secret_keys(self, model: Manifest) -> frozenset[str] | None:
        secret = self._referenced_secret(model)
        return None if secret is None else frozenset(secret)

    def _record_changes(self, model: Manifest, applied: list[Manifest], removed: list[str]) -> None:
        parts = []
        if applied:
            parts.append("applied " + ", ".join(f"{c['kind']} {c['metadata']['name']}" for c in applied))
        if removed:
            parts.append("deleted " + ", ".join(removed))
        message = "; ".join(parts)
        meta = model["metadata"]
        log.info("reconciled", extra=fields(namespace=meta["namespace"], name=meta["name"], did=message))
        self.recorder.event(model, "Normal", "Reconciled", message[:1].upper() + message[1:])

    async def _write_status(self, key: Key, model: Manifest, problem: status_mod.Condition | None) -> Result:
        meta = model["metadata"]
        deployment = self.children[DEPLOYMENTS.kind].get(meta["namespace"], builders.deployment_name(meta["name"]))
        if deployment is not None and not is_controlled_by(deployment, meta["uid"]):
            deployment = None
        scaled = self.children[SCALED_OBJECTS.kind].get(meta["namespace"], builders.scaled_object_name(meta["name"]))
        autoscaling = conditions.autoscaling(model, self.caps.keda, self.settings.pulsar_admin_url, scaled)
        extra = (autoscaling,) if autoscaling is not None else ()
        # Read from the ReplicaSet cache once: who may speak for the spec, and the current workers.
        revisions = self._revisions(key)
        report = self.intake.get(key, self._replaced(revisions, deployment))
        autoscaled = builders.autoscaled(model, self.settings, self.caps)
        workers, again = self._workers(key, deployment, revisions)
        new = status_mod.compute(
            model,
            report,
            deployment,
            extra,
            problem=problem,
            autoscaled=autoscaled,
            workers=workers,
        )
        result, answer, again_in = await self.status_writer.write(key, model, new)
        if result is Written.STALE:
            return (await self._refresh(key)).sooner(again)
        if result is Written.WRITTEN:
            troubled = self._troubled.get(key, frozenset())
            self._announce(model, model.get("status") or {}, new, troubled)
            # Remembered across a rollout, so that the end of a problem is announced too.
            troubled = conditions.troubles(new, troubled)
            if troubled:
                self._troubled[key] = troubled
            else:
                self._troubled.pop(key, None)
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
        live = None
        async for page in self.kube.list(
            AIMODELS, limit=1, namespace=key[0], query={"fieldSelector": f"metadata.name={key[1]}"}
        ):
            for item in page.get("items") or []:
                item.setdefault("apiVersion", AIMODELS.api_version)
                item.setdefault("kind", AIMODELS.kind)
                live = item
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

    def _announce(
        self, model: Manifest, before: dict[str, Any], after: dict[str, Any], troubled: frozenset[str]
    ) -> None:
        for note in conditions.announcements(before, after, troubled):
            self.recorder.event(model, note.type, note.reason, note.message)
