"""Pure builders: (AIModel, operator settings) -> the manifests of its children.

Nothing here talks to the cluster. Each child carries a controller
ownerReference to its AIModel (garbage collection deletes it with the model)
and the hash of its own desired content, so the reconciler can tell a changed
desire from an unchanged one without remembering anything.
"""

from __future__ import annotations

from ..objects import Manifest
from ..settings import Settings
from .access import ModelTokens, role, role_binding, secret, secret_data, service_account
from .keda import KEDA_API_VERSION, Capabilities, autoscaled, scaled_object, trigger_authentication, wants_autoscaling
from .meta import (
    ANNOTATION_HASH,
    ANNOTATION_SECRET_HASH,
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    SECRET_API_KEY,
    SECRET_PULSAR_TOKEN,
    SECRET_STATS_TOKEN,
    WORKER_CONTAINER,
    content_hash,
    deployment_name,
    labels,
    owner_reference,
    role_name,
    scaled_object_name,
    secret_name,
    service_account_name,
    spec_of,
    trigger_auth_name,
)
from .workload import deployment, secret_hash, started_secret_hash, worker_env

__all__ = [
    "ANNOTATION_HASH",
    "ANNOTATION_SECRET_HASH",
    "KEDA_API_VERSION",
    "LABEL_MANAGED_BY",
    "LABEL_MODEL",
    "SECRET_API_KEY",
    "SECRET_PULSAR_TOKEN",
    "SECRET_STATS_TOKEN",
    "WORKER_CONTAINER",
    "Capabilities",
    "ModelTokens",
    "access_children",
    "autoscaled",
    "children",
    "content_hash",
    "deployment",
    "deployment_name",
    "labels",
    "owner_reference",
    "role",
    "role_binding",
    "role_name",
    "scaled_object",
    "scaled_object_name",
    "secret",
    "secret_data",
    "secret_hash",
    "secret_name",
    "service_account",
    "service_account_name",
    "spec_of",
    "started_secret_hash",
    "trigger_auth_name",
    "trigger_authentication",
    "wants_autoscaling",
    "worker_env",
]


def access_children(model: Manifest) -> list[Manifest]:
    """The children that let a model's workers report: what a model has even when it runs none."""
    return [service_account(model), role(model), role_binding(model)]


def children(
    model: Manifest,
    settings: Settings,
    caps: Capabilities,
    ref_hash: str | None = None,
    started_hash: str | None = None,
    tokens: ModelTokens | None = None,
) -> list[Manifest]:
    """Every child the AIModel should have right now, in the order they are best created.

    ``ref_hash``: a hash of the API key behind ``apiKeySecretRef`` (None when unknown);
    ``started_hash``: see ``deployment``; ``tokens``: the model's own Pulsar tokens
    (``settings.per_model_tokens``).
    """
    out = access_children(model)
    # An empty Secret would only be one more object to write and keep.
    if secret_data(model, settings, tokens):
        out.append(secret(model, settings, tokens))
    out.append(deployment(model, settings, caps, ref_hash, started_hash))
    if autoscaled(model, settings, caps):
        if settings.pulsar_token or settings.per_model_tokens:
            out.append(trigger_authentication(model, settings))
        out.append(scaled_object(model, settings))
    return out
