"""The one reconcile path: read the caches, compute the desired children, apply what differs, write status.

Creation, spec changes, drift of a child, a worker's report, KEDA appearing,
an operator restart and the periodic resync all end up here, as a key in
the work queue. A reconcile that finds nothing to change writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from . import api, builders, diff, metrics
from . import status as status_mod
from .builders import Capabilities, Manifest
from .informer import Informer, deep_get, owner_key, rv_int, strip
from .intake import FIELD_SELECTOR, Intake, tiny
from .kube import (
    DEPLOYMENTS,
    EVENTS,
    ROLE_BINDINGS,
    ROLES,
    SCALED_OBJECTS,
    SECRETS,
    SERVICE_ACCOUNTS,
    TRIGGER_AUTHS,
    ApiError,
    Kube,
    Resource,
)
from .recorder import Recorder
from .settings import FIELD_MANAGER, Settings
from .status import AUTOSCALING, Condition
from .workqueue import Key, WorkQueue

log = logging.getLogger(__name__)

AIMODELS = Resource(api.GROUP, api.VERSION, api.PLURAL, api.KIND)
CHILD_RESOURCES = (SERVICE_ACCOUNTS, ROLES, ROLE_BINDINGS, SECRETS, DEPLOYMENTS)
KEDA_RESOURCES = (SCALED_OBJECTS, TRIGGER_AUTHS)
# Children that exist only while the spec or the settings need them, with their names.
OPTIONAL_RESOURCES = (
    (SECRETS, builders.secret_name),
    (SCALED_OBJECTS, builders.scaled_object_name),
    (TRIGGER_AUTHS, builders.trigger_auth_name),
)
MANAGED = f"{builders.LABEL_MANAGED_BY}={FIELD_MANAGER}"

# Ready reasons that mean the operator found something wrong with the AIModel.
PROBLEM_REASONS = frozenset({"ChildConflict", "APIKeySecretNotFound"})

# Kinds applied once the others are: a RoleBinding is checked against its Role.
AFTER_OTHERS = frozenset({"RoleBinding"})

# How often a missing apiKeySecretRef Secret is looked for again.
SECRET_RECHECK_SECONDS = 10.0

# Counters in status (replicas, readyReplicas) are published at most this often.
STATUS_BATCH_SECONDS = 1.0


class ChildConflict(Exception):
    """A child's name is taken by an object this AIModel does not own."""


def _controlled_by(obj: Manifest, uid: str) -> bool:
    refs = deep_get(obj, "metadata", "ownerReferences", default=[]) or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def _keep_deployment(obj: Manifest) -> Manifest:
    strip(obj)
    obj.get("status", {}).pop("conditions", None)
    return obj


class Controller:
    def __init__(
        self, kube: Kube, settings: Settings, instance: str = "", workers: int = 32, resync: float = 300
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.workers = workers
        self.resync = resync
        self.queue = WorkQueue()
        self.models: dict[Key, Manifest] = {}
        self.intake = Intake(self.queue.add)
        self.recorder = Recorder(kube, instance)
        self.children: dict[str, Informer] = {
            res.kind: Informer(
                kube,
                res,
                self._child_event,
                _keep_deployment if res is DEPLOYMENTS else strip,
                optional=res in KEDA_RESOURCES,
                labelSelector=MANAGED,
            )
            for res in (*CHILD_RESOURCES, *KEDA_RESOURCES)
        }
        self.children[SCALED_OBJECTS.kind].on_availability = self._keda_availability
        self.events = Informer(kube, EVENTS, self.intake.handle, tiny, fieldSelector=FIELD_SELECTOR)
        self.synced = asyncio.Event()
        # When the last status write happened, or the first batch of a new model opened.
        self._last_status_write: dict[Key, float] = {}
        self._failures: dict[Key, int] = {}
        self._tasks: list[asyncio.Task] = []
        self._gate: asyncio.Event | None = None
        self._begin_task: asyncio.Task | None = None
        # (kind, namespace, name) of children whose name turned out to belong to someone else.
        self._strangers: set[tuple[str, str, str]] = set()

    # -- inputs ------------------------------------------------------------------

    def model_event(self, kind: str, obj: Manifest) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if kind == "DELETED":
            self.models.pop(key, None)
            self.queue.forget(key)
            self._last_status_write.pop(key, None)
            self._failures.pop(key, None)
            metrics.MODELS.set(len(self.models))
            return
        known = self.models.get(key)
        if known is not None and rv_int(known) >= rv_int(obj) and known["metadata"].get("uid") == meta.get("uid"):
            return
        self.models[key] = strip(obj)
        metrics.MODELS.set(len(self.models))
        self.queue.add(key)

    def _child_event(self, kind: str, obj: Manifest) -> None:
        key = owner_key(obj)
        if key is not None and key in self.models:
            self.queue.add(key)

    def _keda_availability(self, available: bool) -> None:
        log.info("keda available=%s", str(available).lower())
        for key, model in self.models.items():
            if builders.wants_autoscaling(model):
                self.queue.add(key)

    @property
    def caps(self) -> Capabilities:
        return Capabilities(keda=self.children[SCALED_OBJECTS.kind].available is True)

    # -- running -----------------------------------------------------------------

    async def start(self, gate: asyncio.Event | None = None) -> None:
        """Fill the caches, then reconcile once ``gate`` (leadership) is set.

        No reconcile runs before every cache is synced: a reconcile on a
        half-filled cache would re-create children that exist or forget
        reports that were made.
        """
        informers = [*self.children.values(), self.events]
        self.recorder.start()
        self._tasks = [asyncio.create_task(i.run(), name=f"informer-{i.resource.kind}") for i in informers]
        await asyncio.gather(*(i.synced.wait() for i in informers))
        self.synced.set()
        log.info("caches synced models=%d", len(self.models))
        # Kept apart from the tasks that must run forever: this one ends once workers are started.
        self._begin_task = asyncio.create_task(self._begin(gate), name="begin")

    async def _begin(self, gate: asyncio.Event | None) -> None:
        self._gate = gate
        if gate is not None:
            await gate.wait()
        self._tasks += [asyncio.create_task(self._worker(), name=f"worker-{n}") for n in range(self.workers)]
        self._tasks.append(asyncio.create_task(self._resync(), name="resync"))

    def failed_tasks(self) -> list[str]:
        """Background tasks that ended: none should, so any is a reason to restart the operator."""
        return [t.get_name() for t in self._tasks if t.done()]

    async def stop(self) -> None:
        if self._begin_task is not None:
            self._begin_task.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.recorder.stop()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            self.intake.prune(set(self.models))
            for key in list(self.models):
                self.queue.add(key)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            if self._gate is not None and not self._gate.is_set():
                # Leadership lost: act no more (the process is stopping).
                self.queue.done(key)
                await self._gate.wait()
                continue
            started = time.monotonic()
            try:
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                if err.namespace_terminating:
                    # The namespace, and with it the model, is going away: no retry, no noise.
                    log.debug("namespace terminating namespace=%s name=%s", key[0], key[1])
                else:
                    self._on_failure(key, err)
            except Exception as err:
                self._on_failure(key, err)
            else:
                self._failures.pop(key, None)
                metrics.RECONCILES.labels(result="ok").inc()
            finally:
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
                self.queue.done(key)

    def _on_failure(self, key: Key, err: Exception) -> None:
        attempt = self._failures.get(key, 0)
        self._failures[key] = attempt + 1
        delay = min(300.0, 0.5 * 2**attempt)
        metrics.RECONCILES.labels(result="error").inc()
        log.warning("reconcile failed namespace=%s name=%s retry_in=%.1fs error=%s", key[0], key[1], delay, err)
        model = self.models.get(key)
        if model is not None and attempt == 0:
            self.recorder.event(model, "Warning", "ReconcileError", str(err))
        self.queue.add_after(key, delay)

    # -- the reconcile -----------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        model = self.models.get(key)
        if model is None or model["metadata"].get("deletionTimestamp"):
            return
        caps = self.caps
        desired = builders.children(model, self.settings, caps)
        # Children are applied concurrently, except those that need another to exist first:
        # the API server checks a RoleBinding against its Role (RBAC escalation check).
        results: dict[int, Any] = {}
        for stage in (False, True):
            batch = [(i, c) for i, c in enumerate(desired) if (c["kind"] in AFTER_OTHERS) == stage]
            done = await asyncio.gather(*(self._ensure(model, c) for _, c in batch), return_exceptions=True)
            results.update((i, res) for (i, _), res in zip(batch, done, strict=True))
        applied = [child for i, child in enumerate(desired) if results[i] is True]
        errors = [res for res in results.values() if isinstance(res, BaseException)]
        removed = await self._remove_stale(model, {(c["kind"], c["metadata"]["name"]) for c in desired})
        if applied or removed:
            self._record_changes(model, applied, removed)
        conflicts = [str(e) for e in errors if isinstance(e, ChildConflict)]
        await self._write_status(key, model, "; ".join(conflicts))
        if errors:
            raise errors[0]

    async def _ensure(self, model: Manifest, desired: Manifest) -> bool:
        """Apply one child if it differs from what the cache shows. True when written."""
        informer = self.children[desired["kind"]]
        meta = model["metadata"]
        name = desired["metadata"]["name"]
        conflict = ChildConflict(
            f"{desired['kind']} {name} already exists and is not managed by this AIModel: rename or remove it"
        )
        stranger = (desired["kind"], meta["namespace"], name)
        if stranger in self._strangers:
            # Found to be someone else's before: look again (a rare path) until the name is free.
            existing = await self.kube.get(informer.resource, meta["namespace"], name)
            if existing is not None and not _controlled_by(existing, meta["uid"]):
                raise conflict
            self._strangers.discard(stranger)
        actual = informer.get(meta["namespace"], name)
        if not diff.needs_apply(desired, actual):
            return False
        try:
            # Force only over objects known to be ours: without it, a field another manager
            # set differently makes the apply fail rather than be overwritten.
            result, created = await self.kube.apply(desired, force=actual is not None)
        except ApiError as err:
            if err.status != 409:
                raise
            raise conflict from err
        if actual is None and not created:
            # The object existed though none of ours has its name: server-side apply merged our
            # fields into someone else's object (and garbage collection would delete it with the
            # AIModel). Give back exactly what we added; never take over a stranger.
            bare = {
                "apiVersion": desired["apiVersion"],
                "kind": desired["kind"],
                "metadata": {"name": name, "namespace": meta["namespace"]},
            }
            await self.kube.apply(bare, force=False)
            self._strangers.add(stranger)
            informer.forget(meta["namespace"], name)
            raise conflict
        informer.remember(result)
        return True

    async def _remove_stale(self, model: Manifest, wanted: set[tuple[str, str]]) -> list[str]:
        """Delete children this AIModel owns but no longer needs (its Secret, the KEDA objects)."""
        meta = model["metadata"]
        ns = meta["namespace"]
        removed = []
        for res, name_of in OPTIONAL_RESOURCES:
            name = name_of(meta["name"])
            if (res.kind, name) in wanted:
                continue
            informer = self.children[res.kind]
            obj = informer.get(ns, name)
            if obj is None or not _controlled_by(obj, meta["uid"]):
                continue
            if await self.kube.delete(res, ns, name, uid=obj["metadata"]["uid"]):
                removed.append(f"{res.kind} {name}")
            informer.forget(ns, name)
        return removed

    def _record_changes(self, model: Manifest, applied: list[Manifest], removed: list[str]) -> None:
        parts = []
        if applied:
            parts.append("applied " + ", ".join(f"{c['kind']} {c['metadata']['name']}" for c in applied))
        if removed:
            parts.append("deleted " + ", ".join(removed))
        message = "; ".join(parts)
        log.info(
            "reconciled namespace=%s name=%s %s", model["metadata"]["namespace"], model["metadata"]["name"], message
        )
        self.recorder.event(model, "Normal", "Reconciled", message[:1].upper() + message[1:])

    def autoscaling_condition(self, model: Manifest) -> Condition | None:
        if not builders.wants_autoscaling(model):
            return None
        if not self.caps.keda:
            return Condition(
                AUTOSCALING,
                False,
                "KEDANotInstalled",
                "KEDA is not installed (the keda.sh/v1alpha1 ScaledObject API is missing); "
                "workers run at spec.replicas until KEDA is installed",
            )
        if not self.settings.pulsar_admin_url:
            return Condition(
                AUTOSCALING,
                False,
                "PulsarAdminURLNotSet",
                "set PULSAR_ADMIN_URL in the operator's environment to the Pulsar admin API "
                "so KEDA can read the backlog; workers run at spec.replicas meanwhile",
            )
        meta = model["metadata"]
        scaled = self.children[SCALED_OBJECTS.kind].get(meta["namespace"], builders.scaled_object_name(meta["name"]))
        conds = {c.get("type"): c for c in deep_get(scaled, "status", "conditions", default=[]) or []}
        ready = conds.get("Ready")
        if not ready or ready.get("status") == "Unknown":
            return Condition(AUTOSCALING, None, "WaitingForKEDA", "KEDA has not reported on the ScaledObject yet")
        active = (conds.get("Active") or {}).get("status", "Unknown")
        if ready.get("status") == "True":
            return Condition(AUTOSCALING, True, "ScaledObjectReady", f"KEDA ScaledObject ready; active={active}")
        return Condition(
            AUTOSCALING, False, ready.get("reason") or "ScaledObjectNotReady", ready.get("message") or "not ready"
        )

    async def _api_key_secret_problem(self, model: Manifest) -> Condition | None:
        ref = builders.spec_of(model).get("apiKeySecretRef")
        if not ref:
            return None
        ns = model["metadata"]["namespace"]
        key = ref.get("key", api.DEFAULT_API_KEY_SECRET_KEY)
        secret = await self.kube.get(SECRETS, ns, ref["name"])
        if secret is None:
            message = f'spec.apiKeySecretRef: Secret "{ref["name"]}" does not exist in namespace {ns}'
        elif key not in (secret.get("data") or {}):
            message = f'spec.apiKeySecretRef: Secret "{ref["name"]}" has no key "{key}"'
        else:
            return None
        return Condition(status_mod.READY, False, "APIKeySecretNotFound", message)

    async def _write_status(self, key: Key, model: Manifest, conflict: str) -> None:
        meta = model["metadata"]
        deployment = self.children[DEPLOYMENTS.kind].get(meta["namespace"], builders.deployment_name(meta["name"]))
        extra: list[Condition] = []
        autoscaling = self.autoscaling_condition(model)
        if autoscaling is not None:
            extra.append(autoscaling)
        problem = None
        if conflict:
            problem = Condition(status_mod.READY, False, "ChildConflict", conflict)
        else:
            problem = await self._api_key_secret_problem(model)
            if problem is not None:
                # Nothing tells the operator when that Secret appears: look again later.
                self.queue.add_after(key, SECRET_RECHECK_SECONDS)
        new = status_mod.compute(model, self.intake.get(key), deployment, tuple(extra), problem=problem)
        current = model.get("status")
        if not status_mod.differs(current, new):
            return
        if not status_mod.urgent(current, new):
            # A batch opens with the first change seen after the last write.
            opened = self._last_status_write.setdefault(key, time.monotonic())
            wait = opened + STATUS_BATCH_SECONDS - time.monotonic()
            if wait > 0:
                self.queue.add_after(key, wait)
                return
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            # The uid makes the write conditional: never the status of a successor with the same name.
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "status": new,
        }
        try:
            result = await self.kube.apply_to(AIMODELS, body, subresource="status")
        except ApiError as err:
            if err.status in (404, 409):
                return
            raise
        self._last_status_write[key] = time.monotonic()
        changed = sorted(k for k in new if (current or {}).get(k) != new[k])
        log.info("status namespace=%s name=%s state=%s changed=%s", key[0], key[1], new["state"], ",".join(changed))
        self._announce(model, current or {}, new)
        if key in self.models and result:
            self.models[key] = strip(result)
            if result["metadata"].get("generation") != meta.get("generation"):
                # The spec changed while we wrote; its watch event is older than this response
                # and will be dropped, so reconcile the new spec now.
                self.queue.add(key)

    def _announce(self, model: Manifest, before: dict[str, Any], after: dict[str, Any]) -> None:
        # The first status of a new model is no news; a change of state, or a new error, is.
        new_state = before.get("state") not in (None, after["state"])
        new_error = after["state"] == api.State.FAILED and before.get("message") != after["message"]
        if new_state or new_error:
            kind = "Warning" if after["state"] == api.State.FAILED else "Normal"
            self.recorder.event(model, kind, f"State{after['state']}", after["message"])
        old = {c.get("type"): c for c in before.get("conditions") or []}
        for cond in after["conditions"]:
            if (old.get(cond["type"]) or {}).get("reason") == cond["reason"]:
                continue
            if cond["type"] == AUTOSCALING:
                kind = "Normal" if cond["status"] == "True" else "Warning"
                self.recorder.event(model, kind, f"Autoscaling{cond['reason']}", cond["message"])
            elif cond["reason"] in PROBLEM_REASONS:
                # What the operator refuses to do, or cannot, is said where users look.
                self.recorder.event(model, "Warning", cond["reason"], cond["message"])
