"""Pure builders: (AIModel, operator settings) -> the manifests of its children.

Nothing here talks to the cluster. Each child carries a controller
ownerReference to its AIModel (garbage collection deletes it with the model)
and the hash of its own desired content, so the reconciler can tell a changed
desire from an unchanged one without remembering anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import aimodel_contract as contract
from aimodel_contract import Env

from . import api
from .objects import Manifest
from .settings import FIELD_MANAGER, Settings

LABEL_MODEL = f"{api.GROUP}/aimodel"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_HASH = f"{api.GROUP}/desired-hash"
ANNOTATION_SECRET_HASH = f"{api.GROUP}/secret-hash"
WORKER_CONTAINER = "worker"
SECRET_API_KEY = Env.API_KEY
SECRET_PULSAR_TOKEN = Env.PULSAR_TOKEN

KEDA_API_VERSION = "keda.sh/v1alpha1"


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


def _child(model: Manifest, api_version: str, kind: str, name: str, body: dict[str, Any]) -> Manifest:
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


def wants_autoscaling(model: Manifest) -> bool:
    return spec_of(model).get("msgBacklogThreshold") is not None


def autoscaled(model: Manifest, settings: Settings, caps: Capabilities) -> bool:
    """KEDA scales this model: it asks for it, KEDA is installed and the operator knows Pulsar's admin URL."""
    return wants_autoscaling(model) and caps.keda and bool(settings.pulsar_admin_url)


def service_account(model: Manifest) -> Manifest:
    name = model["metadata"]["name"]
    return _child(model, "v1", "ServiceAccount", service_account_name(name), {"automountServiceAccountToken": True})


def role(model: Manifest) -> Manifest:
    name = model["metadata"]["name"]
    rules = [{"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}]
    return _child(model, "rbac.authorization.k8s.io/v1", "Role", role_name(name), {"rules": rules})


def role_binding(model: Manifest) -> Manifest:
    meta = model["metadata"]
    name = meta["name"]
    body = {
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name(name)},
        "subjects": [{"kind": "ServiceAccount", "name": service_account_name(name), "namespace": meta["namespace"]}],
    }
    return _child(model, "rbac.authorization.k8s.io/v1", "RoleBinding", role_name(name), body)


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def secret_data(model: Manifest, settings: Settings) -> dict[str, str]:
    """The values only a Secret may carry; empty when there is nothing secret to hold."""
    spec = spec_of(model)
    data = {}
    if settings.pulsar_token:
        data[SECRET_PULSAR_TOKEN] = _b64(settings.pulsar_token)
    if spec.get("apiKey"):
        data[SECRET_API_KEY] = _b64(spec["apiKey"])
    return data


def secret(model: Manifest, settings: Settings) -> Manifest:
    name = model["metadata"]["name"]
    return _child(model, "v1", "Secret", secret_name(name), {"type": "Opaque", "data": secret_data(model, settings)})


def _env(var: str, value: str) -> dict[str, Any]:
    # The API server drops an empty value; declaring it would look like drift forever.
    return {"name": var, "value": value} if value else {"name": var}


def _secret_env(var: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def worker_env(model: Manifest, settings: Settings) -> list[dict[str, Any]]:
    meta = model["metadata"]
    spec = spec_of(model)
    own_secret = secret_name(meta["name"])
    ref = spec.get("apiKeySecretRef")
    if ref:
        api_key = _secret_env(Env.API_KEY, ref["name"], ref.get("key", api.DEFAULT_API_KEY_SECRET_KEY))
    elif spec.get("apiKey"):
        api_key = _secret_env(Env.API_KEY, own_secret, SECRET_API_KEY)
    else:
        api_key = _env(Env.API_KEY, "")
    pulsar_token = (
        _secret_env(Env.PULSAR_TOKEN, own_secret, SECRET_PULSAR_TOKEN)
        if settings.pulsar_token
        else _env(Env.PULSAR_TOKEN, "")
    )
    # Only when configured: an operator without it keeps the pod template it always had.
    answers = [_env(Env.ANSWER_ENDPOINTS, settings.answer_endpoints)] if settings.answer_endpoints else []
    return [
        _env(Env.NODE_TYPE, spec["type"]),
        _env(Env.MODEL_NAME, spec["model"]),
        _env(Env.API_URL, spec.get("baseURL", "")),
        api_key,
        _env(Env.MAX_PROCESS_NUM, str(spec["maxProcessNum"])),
        _env(Env.AIMODEL_NAME, meta["name"]),
        _env(Env.AIMODEL_NAMESPACE, meta["namespace"]),
        _env(Env.PULSAR_URL, settings.pulsar_url),
        pulsar_token,
        _env(Env.RES_TOPIC_NAME, settings.res_topic_name),
        *answers,
        # The pod name lets a worker name itself as the reporting instance of its events.
        {"name": Env.POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


def secret_hash(model: Manifest, settings: Settings, ref_hash: str | None = None) -> str:
    """What the workers' pods were started with, of what only a Secret carries: the owned Secret's
    data, and ``ref_hash`` (a hash of the value behind apiKeySecretRef). A change rolls the pods,
    which read their env only at start. Without a reference the hash is what it always was."""
    hashed: dict[str, str] = dict(secret_data(model, settings))
    if ref_hash:
        hashed["apiKeySecretRef"] = ref_hash
    return content_hash(hashed)


def deployment(
    model: Manifest,
    settings: Settings,
    caps: Capabilities,
    ref_hash: str | None = None,
    started_hash: str | None = None,
) -> Manifest:
    """The workers' Deployment. ``started_hash``, when given, is the secret hash the pods keep
    (their key is missing: they are not rolled onto nothing)."""
    meta = model["metadata"]
    name = meta["name"]
    spec = spec_of(model)
    selector = {LABEL_MODEL: name}
    pod_labels = labels(model)
    body: dict[str, Any] = {
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    # Pods read the key from the Secret only at start: roll them when it changes.
                    "annotations": {ANNOTATION_SECRET_HASH: started_hash or secret_hash(model, settings, ref_hash)},
                },
                "spec": {
                    "serviceAccountName": service_account_name(name),
                    "containers": [
                        {"name": WORKER_CONTAINER, "image": spec["image"], "env": worker_env(model, settings)}
                    ],
                },
            },
        }
    }
    # With KEDA the HPA owns the replica count; not declaring it leaves it alone.
    if not autoscaled(model, settings, caps):
        body["spec"]["replicas"] = spec["replicas"]
    return _child(model, "apps/v1", "Deployment", deployment_name(name), body)


def scaled_object(model: Manifest, settings: Settings) -> Manifest:
    name = model["metadata"]["name"]
    spec = spec_of(model)
    trigger: dict[str, Any] = {
        "type": "pulsar",
        "metadata": {
            "adminURL": settings.pulsar_admin_url,
            "topic": contract.topic(spec["model"]),
            "subscription": contract.subscription(spec["model"]),
            "msgBacklogThreshold": str(spec["msgBacklogThreshold"]),
        },
    }
    if settings.pulsar_token:
        trigger["metadata"]["authModes"] = "bearer"
        trigger["authenticationRef"] = {"name": trigger_auth_name(name)}
    body: dict[str, Any] = {
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(name)},
            "minReplicaCount": spec.get("minReplicas", 1),
            "maxReplicaCount": spec.get("maxReplicas", api.KEDA_DEFAULT_MAX_REPLICAS),
            "triggers": [trigger],
        }
    }
    # Unset knobs are left out, so that KEDA's and the HPA's own defaults apply.
    for knob in ("pollingInterval", "cooldownPeriod"):
        if spec.get(knob) is not None:
            body["spec"][knob] = spec[knob]
    window = spec.get("scaleDownStabilizationWindowSeconds")
    if window is not None:
        body["spec"]["advanced"] = {
            "horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": window}}}
        }
    return _child(model, KEDA_API_VERSION, "ScaledObject", scaled_object_name(name), body)


def trigger_authentication(model: Manifest) -> Manifest:
    name = model["metadata"]["name"]
    body = {
        "spec": {
            "secretTargetRef": [{"parameter": "bearerToken", "name": secret_name(name), "key": SECRET_PULSAR_TOKEN}]
        }
    }
    return _child(model, KEDA_API_VERSION, "TriggerAuthentication", trigger_auth_name(name), body)


def children(
    model: Manifest,
    settings: Settings,
    caps: Capabilities,
    ref_hash: str | None = None,
    started_hash: str | None = None,
) -> list[Manifest]:
    """Every child the AIModel should have right now, in the order they are best created.

    ``ref_hash``: a hash of the API key behind ``apiKeySecretRef`` (None when unknown);
    ``started_hash``: see ``deployment``.
    """
    out = [service_account(model), role(model), role_binding(model)]
    # An empty Secret would only be one more object to write and keep.
    if secret_data(model, settings):
        out.append(secret(model, settings))
    out.append(deployment(model, settings, caps, ref_hash, started_hash))
    if autoscaled(model, settings, caps):
        if settings.pulsar_token:
            out.append(trigger_authentication(model))
        out.append(scaled_object(model, settings))
    return out


def started_secret_hash(deployment: Manifest | None) -> str | None:
    """The secret hash the workers' pods were started with (the Deployment's pod template says)."""
    if deployment is None:
        return None
    annotations = (deployment["spec"]["template"].get("metadata") or {}).get("annotations") or {}
    hashed = annotations.get(ANNOTATION_SECRET_HASH)
    return hashed if isinstance(hashed, str) else None
