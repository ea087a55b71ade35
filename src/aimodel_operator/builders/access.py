"""What a worker may do and hold: its ServiceAccount, the Role that lets it report, the Secret."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from ..objects import Manifest
from ..settings import Settings
from .meta import (
    SECRET_API_KEY,
    SECRET_PULSAR_TOKEN,
    SECRET_STATS_TOKEN,
    child,
    role_name,
    secret_name,
    service_account_name,
    spec_of,
)


def service_account(model: Manifest) -> Manifest:
    name = model["metadata"]["name"]
    return child(model, "v1", "ServiceAccount", service_account_name(name), {"automountServiceAccountToken": True})


def role(model: Manifest) -> Manifest:
    name = model["metadata"]["name"]
    rules = [{"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}]
    return child(model, "rbac.authorization.k8s.io/v1", "Role", role_name(name), {"rules": rules})


def role_binding(model: Manifest) -> Manifest:
    meta = model["metadata"]
    name = meta["name"]
    body = {
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name(name)},
        "subjects": [{"kind": "ServiceAccount", "name": service_account_name(name), "namespace": meta["namespace"]}],
    }
    return child(model, "rbac.authorization.k8s.io/v1", "RoleBinding", role_name(name), body)


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


@dataclass(frozen=True)
class ModelTokens:
    """A model's own Pulsar tokens (pulsar_auth): its workers', and KEDA's stats-only one."""

    worker: str
    stats: str


def secret_data(model: Manifest, settings: Settings, tokens: ModelTokens | None = None) -> dict[str, str]:
    """The values only a Secret may carry; empty when there is nothing secret to hold."""
    spec = spec_of(model)
    data = {}
    if tokens is not None:
        data[SECRET_PULSAR_TOKEN] = _b64(tokens.worker)
        data[SECRET_STATS_TOKEN] = _b64(tokens.stats)
    elif settings.pulsar_token:
        data[SECRET_PULSAR_TOKEN] = _b64(settings.pulsar_token)
    if spec.get("apiKey"):
        data[SECRET_API_KEY] = _b64(spec["apiKey"])
    return data


def secret(model: Manifest, settings: Settings, tokens: ModelTokens | None = None) -> Manifest:
    name = model["metadata"]["name"]
    data = secret_data(model, settings, tokens)
    return child(model, "v1", "Secret", secret_name(name), {"type": "Opaque", "data": data})
