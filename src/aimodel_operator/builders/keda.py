"""Autoscaling on the Pulsar backlog: KEDA's ScaledObject and TriggerAuthentication."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aimodel_contract as contract

from .. import api
from ..objects import Manifest
from ..settings import Settings
from .meta import (
    SECRET_PULSAR_TOKEN,
    SECRET_STATS_TOKEN,
    child,
    deployment_name,
    scaled_object_name,
    secret_name,
    spec_of,
    trigger_auth_name,
)

KEDA_API_VERSION = "keda.sh/v1alpha1"


@dataclass(frozen=True)
class Capabilities:
    """What the cluster offers, as far as the reconciler has seen."""

    keda: bool = False


def wants_autoscaling(model: Manifest) -> bool:
    return spec_of(model).get("msgBacklogThreshold") is not None


def autoscaled(model: Manifest, settings: Settings, caps: Capabilities) -> bool:
    """KEDA scales this model: it asks for it, KEDA is installed and the operator knows Pulsar's admin URL."""
    return wants_autoscaling(model) and caps.keda and bool(settings.pulsar_admin_url)


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
    if settings.pulsar_token or settings.per_model_tokens:
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
    return child(model, KEDA_API_VERSION, "ScaledObject", scaled_object_name(name), body)


def trigger_authentication(model: Manifest, settings: Settings) -> Manifest:
    """KEDA's credential for the backlog: the one token, or with a token per model a stats-only one."""
    name = model["metadata"]["name"]
    key = SECRET_STATS_TOKEN if settings.per_model_tokens else SECRET_PULSAR_TOKEN
    body = {"spec": {"secretTargetRef": [{"parameter": "bearerToken", "name": secret_name(name), "key": key}]}}
    return child(model, KEDA_API_VERSION, "TriggerAuthentication", trigger_auth_name(name), body)
