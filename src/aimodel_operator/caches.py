"""What each cache keeps of the objects it watches, and the indexes kept with them.

A cache holds only what a reconcile reads (transforms), compactly: a Deployment without its
conditions' timestamps, a ReplicaSet's model and revision, of someone else's Secret its name and
resourceVersion. The indexes answer "which objects belong to this AIModel" and "which AIModels
reference this Secret" from the caches themselves (Informer.add_index).
"""

from __future__ import annotations

from . import builders
from .informer import strip
from .objects import Key, Manifest, owner_key
from .workers import deployment_problems

REVISION = "deployment.kubernetes.io/revision"

# Labelled Secrets listed per page (the Secrets row of watches.WATCHES).
SECRET_PAGE = 10


def keep_deployment(obj: Manifest) -> Manifest:
    strip(obj)
    status = obj.get("status")
    if status is not None:
        # Of its conditions only the problems (refused pods, a stalled rollout); the others
        # change their timestamps all the time.
        problems = deployment_problems(obj)
        status.pop("conditions", None)
        if problems:
            status["problems"] = problems
    return obj


def keep_secret(obj: Manifest) -> Manifest:
    """A labelled Secret: whole when an AIModel controls it (its data is compared with what we
    would apply); one that merely carries our label keeps its metadata only."""
    if owner_key(obj) is not None:
        return strip(obj)
    meta = obj["metadata"]
    return {
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "ownerReferences") if k in meta
        }
    }


def keep_name(obj: Manifest) -> Manifest:
    """Of any Secret in the cluster, what tells that it exists and when it changed."""
    meta = obj["metadata"]
    return {"metadata": {k: meta[k] for k in ("name", "namespace", "resourceVersion") if k in meta}}


def keep_replica_set(obj: Manifest) -> Manifest:
    meta = obj["metadata"]
    return {
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
            "labels": {builders.LABEL_MODEL: (meta.get("labels") or {}).get(builders.LABEL_MODEL, "")},
            "annotations": {REVISION: (meta.get("annotations") or {}).get(REVISION, "0")},
        }
    }


# Informer indexes: the worker pods and ReplicaSets of a model, the models that reference a Secret.
BY_MODEL = "model"
BY_SECRET_REF = "apiKeySecretRef"
# The AIModels that name a model (spec.model): who holds it (claims.py).
BY_MODEL_NAME = "modelName"


def model_key(obj: Manifest) -> Key | None:
    """The key of the AIModel whose workers ``obj`` belongs to (its model label)."""
    meta = obj["metadata"]
    model = (meta.get("labels") or {}).get(builders.LABEL_MODEL)
    return (meta.get("namespace", ""), model) if model else None


def of_model(obj: Manifest) -> tuple[str, ...]:
    """The BY_MODEL index value of ``obj``: ``namespace/name`` of its AIModel."""
    key = model_key(obj)
    return (index_value(key),) if key is not None else ()


def secret_ref(obj: Manifest) -> tuple[str, ...]:
    """``namespace/name`` of the Secret the AIModel's apiKeySecretRef names."""
    name = (builders.spec_of(obj).get("apiKeySecretRef") or {}).get("name")
    return (f"{obj['metadata'].get('namespace', '')}/{name}",) if name else ()


def model_name(obj: Manifest) -> tuple[str, ...]:
    """The BY_MODEL_NAME index value of an AIModel: its spec.model."""
    name = builders.spec_of(obj).get("model")
    return (name,) if isinstance(name, str) and name else ()


def index_value(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


def revision(obj: Manifest) -> int:
    try:
        return int(obj["metadata"]["annotations"][REVISION])
    except (KeyError, ValueError):
        return 0
