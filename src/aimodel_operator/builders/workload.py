"""The workers' Deployment: their pod, its container and the environment that configures it."""

from __future__ import annotations

from typing import Any

from aimodel_contract import Env

from .. import api
from ..objects import Manifest
from ..settings import Settings
from .access import secret_data
from .keda import Capabilities, autoscaled
from .meta import (
    ANNOTATION_SECRET_HASH,
    LABEL_MODEL,
    SECRET_API_KEY,
    SECRET_PULSAR_TOKEN,
    TOKEN_DIR,
    TOKEN_FILE,
    TOKEN_VOLUME,
    child,
    content_hash,
    deployment_name,
    labels,
    secret_name,
    service_account_name,
    spec_of,
)
from .pod import pod_template


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
    if settings.per_model_tokens:
        pulsar_token = _env(Env.PULSAR_TOKEN, f"file://{TOKEN_DIR}/{TOKEN_FILE}")
    elif settings.pulsar_token:
        pulsar_token = _secret_env(Env.PULSAR_TOKEN, own_secret, SECRET_PULSAR_TOKEN)
    else:
        pulsar_token = _env(Env.PULSAR_TOKEN, "")
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
    which read their env only at start. Without a reference the hash is what it always was.
    Per-model tokens are not in it: workers read theirs from a file, renewed in place."""
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
            "template": pod_template(
                spec.get("template"),
                pod_labels,
                # Pods read the key from the Secret only at start: roll them when it changes.
                {ANNOTATION_SECRET_HASH: started_hash or secret_hash(model, settings, ref_hash)},
                service_account_name(name),
                spec["image"],
                worker_env(model, settings),
                token_volume(name) if settings.per_model_tokens else (),
            ),
        }
    }
    # With KEDA the HPA owns the replica count; not declaring it leaves it alone.
    if not autoscaled(model, settings, caps):
        body["spec"]["replicas"] = spec["replicas"]
    return child(model, "apps/v1", "Deployment", deployment_name(name), body)


def token_volume(name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The worker's per-model token as a file, from the model's Secret (the default mode: the
    worker runs as a non-root user the kubelet does not make the file's owner)."""
    volume = {
        "name": TOKEN_VOLUME,
        "secret": {
            "secretName": secret_name(name),
            "items": [{"key": SECRET_PULSAR_TOKEN, "path": TOKEN_FILE}],
        },
    }
    return [(volume, {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})]


def started_secret_hash(deployment: Manifest | None) -> str | None:
    """The secret hash the workers' pods were started with (the Deployment's pod template says)."""
    if deployment is None:
        return None
    annotations = (deployment["spec"]["template"].get("metadata") or {}).get("annotations") or {}
    hashed = annotations.get(ANNOTATION_SECRET_HASH)
    return hashed if isinstance(hashed, str) else None
