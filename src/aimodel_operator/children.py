"""Applying an AIModel's children, with ownership read from the objects themselves.

A child belongs to an AIModel when its controller owner reference carries
that AIModel's uid, and only then. The operator never writes to any other
object, not even for a moment:

- a child missing from the cache is created by an apply that carries the
  resourceVersion "1", which no object can have (etcd's first revision
  precedes every write): the API server creates the object when the name is
  free, owned by the operator's Apply field manager like any apply, and
  refuses the apply (409) when the name is taken, so an existing object is
  never touched;
- on that refusal the object is read, and adopted only if this AIModel
  controls it; otherwise the name clash is reported (ChildConflict) and
  nothing is written; the name is looked up (read only) on later reconciles
  until it is free;
- an update of a known child carries that child's uid, so it can never land
  on a same-named object that replaced it.

Children that depend on another (the Deployment on its ServiceAccount and
Secret, the RoleBinding on its Role and ServiceAccount, the ScaledObject on
the Deployment) are applied only once their dependencies are applied and
ours: a clash on a ServiceAccount never runs the user's image under someone
else's identity.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import builders, diff
from .informer import Informer
from .kube import ApiError, BadRequest, Conflict, Forbidden, Kube, Unprocessable
from .logs import fields
from .objects import Key, Manifest, aimodel_controller, is_controlled_by
from .scoped import Scoped

log = logging.getLogger(__name__)

# A resourceVersion no object has: an apply carrying it can only create.
CREATE_ONLY = "1"

# kind -> kinds that must be applied (and ours) first.
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "RoleBinding": ("Role", "ServiceAccount"),
    "Deployment": ("ServiceAccount", "Secret"),
    "TriggerAuthentication": ("Secret",),
    "ScaledObject": ("Deployment", "TriggerAuthentication"),
}


class ChildConflict(Exception):
    """A child's name is taken by an object this AIModel does not control."""


class ChildPending(Exception):
    """A child's name is held by a previous AIModel of the same name, which garbage collection is removing."""


class Blocked(Exception):
    """Not applied because a child it depends on could not be."""


class Replaced(Exception):
    """The object changed identity under us (deleted, or replaced by a namesake): look again."""


def refusal(err: ApiError) -> bool:
    """The API server said no to the object itself (admission, quota, validation), not a passing failure."""
    return isinstance(err, (BadRequest, Forbidden, Unprocessable)) and not err.namespace_terminating


@dataclass
class Outcome:
    applied: list[Manifest] = field(default_factory=list)
    # Names taken by objects this AIModel does not control.
    conflicts: list[str] = field(default_factory=list)
    # Held by a deleted namesake (garbage collection is on it), or replaced under us: look again soon.
    pending: bool = False
    # What the API server refused, "<kind> <name>: <its message>".
    refused: list[str] = field(default_factory=list)
    # Anything that failed (refusals included); the first is raised to retry with backoff.
    errors: list[Exception] = field(default_factory=list)
    # Children not applied for any reason (failed, or waiting on one that failed).
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.conflicts or self.pending or self.errors or self.missing)


def conflict_message(kind: str, name: str) -> str:
    return f"{kind} {name} already exists and is not managed by this AIModel: rename or remove it"


def judge(model: Manifest, obj: Manifest) -> None:
    """Raise unless ``obj`` is controlled by ``model``."""
    meta = model["metadata"]
    if is_controlled_by(obj, meta["uid"]):
        return
    ref = aimodel_controller(obj)
    if ref is not None and ref.get("name") == meta["name"]:
        raise ChildPending(f"{obj.get('kind')} {obj['metadata']['name']} still belongs to a deleted AIModel")
    raise ChildConflict(conflict_message(obj.get("kind", "object"), obj["metadata"]["name"]))


class ChildApplier:
    def __init__(self, kube: Kube, informers: Mapping[str, Informer | Scoped]) -> None:
        self.kube = kube
        self.informers = informers
        # (kind, namespace, name) found to be someone else's: read before any write until free.
        # Per AIModel, the (kind, name) of its children found to be someone else's.
        self.strangers: dict[Key, set[tuple[str, str]]] = {}

    def forget(self, key: Key) -> None:
        """The AIModel is gone: nothing of it is kept."""
        self.strangers.pop(key, None)

    def _stranger(self, key: Key, kind: str, name: str, held: bool) -> None:
        names = self.strangers.setdefault(key, set())
        if held:
            names.add((kind, name))
            return
        names.discard((kind, name))
        if not names:
            del self.strangers[key]

    async def apply_all(self, model: Manifest, desired: list[Manifest]) -> Outcome:
        """Apply every child that differs, each once its dependencies are in place."""
        tasks: dict[str, asyncio.Task[Any]] = {}

        async def one(child: Manifest) -> bool:
            for dep in DEPENDS_ON.get(child["kind"], ()):
                task = tasks.get(dep)
                if task is None:
                    continue
                try:
                    await task
                except Exception as err:
                    raise Blocked(f"{child['kind']} waits for {dep}") from err
            return await self.ensure(model, child)

        for child in desired:
            tasks[child["kind"]] = asyncio.ensure_future(one(child))
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        out = Outcome()
        for child, res in zip(desired, results, strict=True):
            label = f"{child['kind']} {child['metadata']['name']}"
            if isinstance(res, asyncio.CancelledError):
                raise res
            if res is True:
                out.applied.append(child)
                continue
            if res is False:
                continue
            out.missing.append(label)
            if isinstance(res, ChildConflict):
                out.conflicts.append(str(res))
            elif isinstance(res, ChildPending | Replaced):
                out.pending = True
            elif isinstance(res, Blocked):
                pass  # what it waits for says why
            elif isinstance(res, Exception):
                out.errors.append(res)
                if isinstance(res, ApiError) and refusal(res):
                    out.refused.append(f"{label}: {res.message}")
        return out

    async def ensure(self, model: Manifest, desired: Manifest) -> bool:
        """Make one child hold what ``desired`` says. True when written."""
        kind, name = desired["kind"], desired["metadata"]["name"]
        ns = model["metadata"]["namespace"]
        informer = self.informers[kind]
        cached = informer.get(ns, name)
        key = (ns, model["metadata"]["name"])
        if cached is None and (kind, name) in self.strangers.get(key, ()):
            # Someone else's before: look (a read) until the name is free or the object ours.
            cached = await self.kube.get(informer.resource, ns, name)
            if cached is None:
                self._stranger(key, kind, name, held=False)
        if cached is not None:
            try:
                judge(model, cached)
            except ChildConflict:
                self._stranger(key, kind, name, held=True)
                raise
            self._stranger(key, kind, name, held=False)
            if not diff.needs_apply(desired, cached):
                informer.remember(cached)
                return False
            result = await self._apply(desired, cached["metadata"]["uid"], informer)
        else:
            created = await self._create(model, desired, informer)
            if created is None:
                return False
            result = created
        informer.remember(result)
        return True

    async def _apply(self, desired: Manifest, uid: str, informer: Informer | Scoped) -> Manifest:
        """Apply over the very object ``uid`` names (forced: it is ours), never over a successor."""
        body = {**desired, "metadata": {**desired["metadata"], "uid": uid}}
        try:
            result = await self.kube.apply(body, force=True)
        except ApiError as err:
            # 409: gone meanwhile ("uid mismatch"); 422 on metadata.uid: a namesake replaced it.
            # Nothing was written; what is there now is looked at on the next reconcile.
            if isinstance(err, Conflict) or (isinstance(err, Unprocessable) and "metadata.uid" in err.message):
                meta = desired["metadata"]
                informer.forget(meta["namespace"], meta["name"])
                raise Replaced(f"{desired['kind']} {meta['name']} changed under us") from err
            raise
        return result

    async def _create(self, model: Manifest, desired: Manifest, informer: Informer | Scoped) -> Manifest | None:
        """Create an absent child; if the name is taken, adopt only what this AIModel controls.

        Returns what was written, None when the object was ours and already right.
        """
        meta = desired["metadata"]
        # No object has this resourceVersion: an existing one refuses the apply untouched (409),
        # a free name is created.
        body = {**desired, "metadata": {**meta, "resourceVersion": CREATE_ONLY}}
        try:
            return await self.kube.apply(body, force=True)
        except Conflict:
            pass
        live = await self.kube.get(informer.resource, meta["namespace"], meta["name"])
        if live is None:
            raise Replaced(f"{desired['kind']} {meta['name']} vanished while it was created")
        try:
            judge(model, live)
        except ChildConflict:
            self._stranger((meta["namespace"], model["metadata"]["name"]), desired["kind"], meta["name"], held=True)
            raise
        # Ours, though the cache did not show it (a label removed, a cache behind the API).
        if not diff.needs_apply(desired, live):
            informer.remember(live)
            return None
        log.info(
            "adopting own child", extra=fields(kind=desired["kind"], namespace=meta["namespace"], name=meta["name"])
        )
        return await self._apply(desired, live["metadata"]["uid"], informer)

    async def remove_stale(self, model: Manifest, wanted: set[tuple[str, str]]) -> list[str]:
        """Delete optional children this AIModel controls but no longer needs (its Secret, the KEDA
        objects; its Deployment while another namespace holds its model name)."""
        meta = model["metadata"]
        ns = meta["namespace"]
        removed = []
        for kind, name_of in OPTIONAL_CHILDREN:
            name = name_of(meta["name"])
            if (kind, name) in wanted:
                continue
            informer = self.informers[kind]
            obj = informer.get(ns, name)
            if obj is None or not is_controlled_by(obj, meta["uid"]):
                continue
            if await self.kube.delete(informer.resource, ns, name, uid=obj["metadata"]["uid"]):
                removed.append(f"{kind} {name}")
            informer.forget(ns, name)
        return removed


# Children that exist only while the spec, the settings or the model name's holder need them.
OPTIONAL_CHILDREN = (
    ("Deployment", builders.deployment_name),
    ("Secret", builders.secret_name),
    ("ScaledObject", builders.scaled_object_name),
    ("TriggerAuthentication", builders.trigger_auth_name),
)
