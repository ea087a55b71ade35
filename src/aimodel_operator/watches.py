"""What the operator watches, and where each change goes: one table.

Every row is one cache (an informer): the kind, what of each object is kept
(the transform, ``caches.py``), which objects (selector), how a change maps to
the keys of the AIModels it concerns, and at which speed those are reconciled:

- ``FULL``: something a model's children are built from may have changed (its
  spec, a child, a referenced Secret, KEDA coming or going): the children are
  built and applied again, then the status is written.
- ``STATUS``: only what the status shows may have changed (a pod, a rollout's
  ReplicaSet): a model whose children were all in place last time only has
  its status written (``Controller._settled``).
- ``URGENT``: a worker's report: status only, ahead of everything queued.

A new kind to watch is a new row; ``Controller`` builds the informers and
routes their events from it (the two rows without a route, ``models`` and
``events``, go to its own handlers by name).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from . import caches
from .builders import LABEL_MANAGED_BY
from .informer import Handler, Indexer, Informer, Transform, strip
from .intake import FIELD_SELECTOR
from .kube import (
    AIMODELS,
    DEPLOYMENTS,
    EVENTS,
    PODS,
    REPLICA_SETS,
    ROLE_BINDINGS,
    ROLES,
    SCALED_OBJECTS,
    SECRETS,
    SERVICE_ACCOUNTS,
    TRIGGER_AUTHS,
    Kube,
    Resource,
)
from .objects import Key, Manifest, owner_key
from .scoped import Scoped
from .settings import FIELD_MANAGER
from .workers import keep_pod


class Speed(enum.Enum):
    FULL = "full"
    STATUS = "status"
    URGENT = "urgent"


class Models(Protocol):
    """What a route may ask about the AIModels: the models cache's index lookup."""

    def by_index(self, name: str, value: str) -> list[Key]: ...


# A change (event type, the object as received: the transform may already have trimmed it in
# place) to the keys of the AIModels it concerns.
Route = Callable[[str, Manifest, Models], Iterable[Key]]

MANAGED = {"labelSelector": f"{LABEL_MANAGED_BY}={FIELD_MANAGER}"}


@dataclass(frozen=True)
class Watch:
    name: str
    resource: Resource
    transform: Transform
    route: Route | None  # None: the controller's own handler, by name (models, events)
    speed: Speed
    # labelSelector / fieldSelector of the list and watch.
    selector: Mapping[str, str] = field(default_factory=dict)
    # Secondary indexes kept with the cache (Informer.add_index).
    indexes: Mapping[str, Indexer] = field(default_factory=dict)
    # The kind may not be served (KEDA's, or the CRD not installed yet), or forbidden to us.
    optional: bool = False
    # False: nothing is cached (a relist delivers every object again).
    keep: bool = True
    # Each object's metadata alone (PartialObjectMetadata).
    metadata_only: bool = False
    page_size: int = 500


def informer(
    watch: Watch, kube: Kube, handler: Handler, namespaces: tuple[str, ...], idle: float | None
) -> Informer | Scoped:
    """The cache of one row: over every namespace, or one informer per watched namespace read as one."""

    def one(namespace: str | None) -> Informer:
        return Informer(
            kube,
            watch.resource,
            handler,
            watch.transform,
            optional=watch.optional,
            keep=watch.keep,
            idle=idle,
            page_size=watch.page_size,
            namespace=namespace,
            metadata_only=watch.metadata_only,
            selectors=watch.selector,
        )

    made: Informer | Scoped = one(None) if not namespaces else Scoped(one, namespaces)
    for name, indexer in watch.indexes.items():
        made.add_index(name, indexer)
    return made


def owner(kind: str, obj: Manifest, models: Models) -> Iterable[Key]:
    """A child: the AIModel that controls it."""
    key = owner_key(obj)
    return (key,) if key is not None else ()


def referencing(kind: str, obj: Manifest, models: Models) -> Iterable[Key]:
    """Any Secret: the AIModels whose apiKeySecretRef names it."""
    meta = obj["metadata"]
    return models.by_index(caches.BY_SECRET_REF, caches.index_value((meta.get("namespace", ""), meta["name"])))


def labelled(kind: str, obj: Manifest, models: Models) -> Iterable[Key]:
    """A worker pod: the AIModel its model label names."""
    key = caches.model_key(obj)
    return (key,) if key is not None else ()


def new_replica_set(kind: str, obj: Manifest, models: Models) -> Iterable[Key]:
    """A rollout's new ReplicaSet: reports held back until it was known can now be judged."""
    return labelled(kind, obj, models) if kind == "ADDED" else ()


def _child(res: Resource, transform: Transform, optional: bool = False, page_size: int = 500) -> Watch:
    return Watch(res.kind, res, transform, owner, Speed.FULL, MANAGED, optional=optional, page_size=page_size)


# The worker pods and ReplicaSets of a model (by its label).
BY_MODEL = {caches.BY_MODEL: caches.of_model}

WATCHES: tuple[Watch, ...] = (
    # Optional like KEDA's kinds: an operator started before its CRD serves AIModels once it is installed.
    # (Its index of the Secrets models reference is the controller's: forgetting one forgets the values.)
    Watch("models", AIMODELS, strip, None, Speed.FULL, optional=True),
    _child(SERVICE_ACCOUNTS, strip),
    _child(ROLES, strip),
    _child(ROLE_BINDINGS, strip),
    _child(DEPLOYMENTS, caches.keep_deployment),
    _child(SCALED_OBJECTS, strip, optional=True),
    _child(TRIGGER_AUTHS, strip, optional=True),
    # Our own Secrets, whole. Small pages: anyone may put our label on a large Secret of theirs,
    # and a page is parsed whole before the transform drops what is not ours (10 of 1 MiB at most).
    _child(SECRETS, caches.keep_secret, page_size=caches.SECRET_PAGE),
    # Of every other Secret only the name and resourceVersion (metadata alone is read): those that
    # apiKeySecretRef names are read by name when they change, and kept as hashes (refs.py).
    Watch("secret_names", SECRETS, caches.keep_name, referencing, Speed.FULL, metadata_only=True),
    Watch(
        "replica_sets", REPLICA_SETS, caches.keep_replica_set, new_replica_set, Speed.STATUS, MANAGED, indexes=BY_MODEL
    ),
    # Worker pods, in a tiny form: what the WorkersAvailable condition needs.
    Watch("pods", PODS, keep_pod, labelled, Speed.STATUS, MANAGED, indexes=BY_MODEL),
    # Not cached (no transform runs): a report only needs its resourceVersion, which the intake keeps.
    Watch("events", EVENTS, strip, None, Speed.URGENT, {"fieldSelector": FIELD_SELECTOR}, keep=False),
)

CHILDREN = tuple(w for w in WATCHES if w.route is owner)
