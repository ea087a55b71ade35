"""What an AIModel's status says, read from the caches: its Deployment and ScaledObject, its
ReplicaSets and worker pods, and the workers' reports. ``status.py`` computes; this gathers."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from . import builders, caches, claims, conditions
from . import status as status_mod
from .builders import Capabilities
from .intake import Intake
from .objects import Key, Manifest, is_controlled_by
from .settings import Settings
from .workers import grace_left, summarize


class Cache(Protocol):
    def get(self, namespace: str, name: str) -> Manifest | None: ...

    def by_index(self, name: str, value: str) -> list[Key]: ...


class StatusView:
    def __init__(
        self,
        children: Mapping[str, Cache],
        replica_sets: Cache,
        pods: Cache,
        intake: Intake,
        settings: Settings,
        caps: Callable[[], Capabilities],
    ) -> None:
        self.children = children
        self.replica_sets = replica_sets
        self.pods = pods
        self.intake = intake
        self.settings = settings
        self.caps = caps

    def deployment(self, model: Manifest) -> Manifest | None:
        """The model's Deployment as cached, if the model controls it."""
        meta = model["metadata"]
        found = self.children["Deployment"].get(meta["namespace"], builders.deployment_name(meta["name"]))
        return found if found is not None and is_controlled_by(found, meta["uid"]) else None

    def compute(
        self, key: Key, model: Manifest, problem: status_mod.Condition | None
    ) -> tuple[dict[str, Any], float | None]:
        """The status to write, and the seconds after which it must be computed again though no
        event may come (None: when one does)."""
        meta = model["metadata"]
        deployment = self.deployment(model)
        caps = self.caps()
        scaled = self.children["ScaledObject"].get(meta["namespace"], builders.scaled_object_name(meta["name"]))
        held = problem is not None and problem.reason == claims.MODEL_NAME_IN_USE
        autoscaling = conditions.autoscaling(model, caps.keda, self.settings.pulsar_admin_url, scaled, held)
        extra = (autoscaling,) if autoscaling is not None else ()
        # Read from the ReplicaSet cache once: who may speak for the spec, and the current workers.
        revisions = self.revisions(key)
        report = self.intake.get(key, replaced(revisions, deployment))
        workers, again = self.workers(key, deployment, revisions)
        new = status_mod.compute(
            model,
            report,
            deployment,
            extra,
            problem=problem,
            autoscaled=builders.autoscaled(model, self.settings, caps),
            workers=workers,
        )
        return new, again

    def revisions(self, key: Key) -> dict[str, int]:
        """The Deployment revision of each of the model's ReplicaSets, to tell replaced pods' reports."""
        out = {}
        for rs_key in self.replica_sets.by_index(caches.BY_MODEL, caches.index_value(key)):
            rs = self.replica_sets.get(*rs_key)
            if rs is not None:
                out[rs_key[1]] = caches.revision(rs)
        return out

    def workers(
        self, key: Key, deployment: Manifest | None, revisions: dict[str, int]
    ) -> tuple[status_mod.Condition | None, float | None]:
        """The WorkersAvailable condition, from the kept pods of the current ReplicaSet, and when
        to compute it again though no event may come."""
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


def replaced(revisions: dict[str, int], deployment: Manifest | None) -> Callable[[str], bool]:
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
