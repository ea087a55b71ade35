"""What every child shares: names, labels, the owner reference, the desired-content hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from aimodel_contract import Env

from .. import api
from ..objects import Manifest
from ..settings import FIELD_MANAGER

LABEL_MODEL = f"{api.GROUP}/aimodel"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_HASH = f"{api.GROUP}/desired-hash"
ANNOTATION_SECRET_HASH = f"{api.GROUP}/secret-hash"
WORKER_CONTAINER = "worker"
SECRET_API_KEY = Env.API_KEY
SECRET_PULSAR_TOKEN = Env.PULSAR_TOKEN
# With a token per model (pulsar_auth): KEDA's own, that may only read the topic's stats.
SECRET_STATS_TOKEN = "PULSAR_STATS_TOKEN"
# Where the worker's per-model token is mounted: a file the kubelet keeps current, which the
# Pulsar client re-reads at every (re)connect (``PULSAR_TOKEN=file://...``), so a renewal
# reaches running workers without a restart.
TOKEN_VOLUME = "aimodel-pulsar-token"
TOKEN_DIR = "/var/run/secrets/aimodel/pulsar"
TOKEN_FILE = "token"


def deployment_name(name: str) -> str:
    return f"{name}-deployment"


def service_account_name(name: str) -> str:
    return f"{name}-worker"


def role_name(name: str) -> str:
    return f"{name}-worker-events"


def secret_name(name: str) -> str:
    return f"{name}-worker-secrets"


def scaled_object_name(name: str) -> str:
    return f"{name}-scaledobject"


def trigger_auth_name(name: str) -> str:
    return f"{name}-pulsar-auth"


@dataclass(frozen=True)
class Capabilities:
    """What the cluster offers, as far as the reconciler has seen."""

    keda: bool = False


def labels(model: Manifest) -> dict[str, str]:
    name = model["metadata"]["name"]
    return {
        "app.kubernetes.io/name": "aimodel-worker",
        "app.kubernetes.io/instance": name,
        LABEL_MANAGED_BY: FIELD_MANAGER,
        LABEL_MODEL: name,
    }


def owner_reference(model: Manifest) -> dict[str, Any]:
    meta = model["metadata"]
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def child(model: Manifest, api_version: str, kind: str, name: str, body: dict[str, Any]) -> Manifest:
    manifest: Manifest = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": model["metadata"]["namespace"],
            "labels": labels(model),
            "ownerReferences": [owner_reference(model)],
        },
        **body,
    }
    manifest["metadata"]["annotations"] = {ANNOTATION_HASH: content_hash(manifest)}
    return manifest


def spec_of(model: Manifest) -> dict[str, Any]:
    """The spec with the CRD's defaults filled in (the API server does too, but not for old objects)."""
    spec = dict(model.get("spec") or {})
    spec.setdefault("replicas", api.DEFAULT_REPLICAS)
    spec.setdefault("maxProcessNum", api.DEFAULT_MAX_PROCESS_NUM)
    return spec
