"""The AIModel resource: its fields, defaults, validation and the CRD generated from them.

Everything a user sees of the resource (field names, defaults, the CEL
messages that refuse bad input, printer columns) is declared here once.
``make manifests`` writes the CRD from :func:`crd`; a unit test keeps the
committed YAML identical to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aimodel_contract as contract

from . import podtemplate

# The names workers know too live in the contract; the resource's own below.
GROUP = contract.GROUP
VERSION = contract.VERSION
API_VERSION = contract.API_VERSION
KIND = contract.KIND
PLURAL = "aimodels"
SINGULAR = "aimodel"

# The longest AIModel name whose derived names still fit: KEDA labels its HPA
# with the ScaledObject name "<name>-scaledobject", and label values are <= 63.
MAX_NAME_LENGTH = 63 - len("-scaledobject")

DEFAULT_REPLICAS = 1
DEFAULT_MAX_PROCESS_NUM = contract.DEFAULT_MAX_PROCESS_NUM
DEFAULT_API_KEY_SECRET_KEY = "apiKey"
KEDA_DEFAULT_MAX_REPLICAS = 100
# KEDA's and the HPA's own defaults, applied by them when the AIModel leaves a knob unset.
KEDA_DEFAULT_POLLING_INTERVAL = 30
KEDA_DEFAULT_COOLDOWN_PERIOD = 300
HPA_DEFAULT_SCALE_DOWN_STABILIZATION = 300
HPA_MAX_STABILIZATION_WINDOW = 3600
# Upper bounds: a typo (replicas: 100000) must not ask the cluster for a hundred thousand pods,
# nor a worker for a hundred thousand requests in flight.
MAX_REPLICAS = 1000
MAX_PROCESS_NUM_LIMIT = 4096


class ModelType(StrEnum):
    LOCAL = "local"
    REMOTE = "remote"


class State(StrEnum):
    RUNNING = "Running"
    FAILED = "Failed"


@dataclass(frozen=True)
class Field:
    name: str
    # A schema, or what makes one when the CRD is generated: the pod template's is over a
    # megabyte of Python objects that the running operator never reads.
    schema: dict[str, Any] | Callable[[], dict[str, Any]]
    description: str
    required: bool = False

    def openapi(self) -> dict[str, Any]:
        schema = self.schema() if callable(self.schema) else self.schema
        return {**schema, "description": self.description}


DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"

SPEC_FIELDS: tuple[Field, ...] = (
    Field("type", {"type": "string", "enum": [t.value for t in ModelType]}, "Where the model runs.", required=True),
    Field(
        "model",
        {"type": "string", "minLength": 1, "maxLength": 200},
        "Model name, e.g. TinyLlama-1.1B or gpt-3.5-turbo.",
        required=True,
    ),
    Field("image", {"type": "string", "minLength": 1, "maxLength": 1024}, "Worker container image.", required=True),
    Field(
        "replicas",
        {"type": "integer", "format": "int32", "minimum": 0, "maximum": MAX_REPLICAS, "default": DEFAULT_REPLICAS},
        f"Fixed number of workers (at most {MAX_REPLICAS}). Ignored while KEDA autoscaling is active.",
    ),
    Field(
        "maxProcessNum",
        {
            "type": "integer",
            "format": "int32",
            "minimum": 1,
            "maximum": MAX_PROCESS_NUM_LIMIT,
            "default": DEFAULT_MAX_PROCESS_NUM,
        },
        f"Maximum number of requests one worker processes at once (at most {MAX_PROCESS_NUM_LIMIT}).",
    ),
    Field(
        "baseURL",
        {"type": "string", "minLength": 1, "maxLength": 2048, "pattern": r"^https?://[^\s]+$"},
        "Upstream API URL (remote models): http:// or https://.",
    ),
    Field(
        "apiKey",
        {"type": "string", "minLength": 1, "maxLength": 4096},
        "Upstream API key (remote models). Stored in a Secret owned by the AIModel, never in the Deployment.",
    ),
    Field(
        "apiKeySecretRef",
        {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 253,
                    # A Secret name (RFC 1123 subdomain): never a path that could reach elsewhere.
                    "pattern": DNS_SUBDOMAIN_PATTERN,
                    "description": "Secret name.",
                },
                "key": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 253,
                    "pattern": SECRET_KEY_PATTERN,
                    "default": DEFAULT_API_KEY_SECRET_KEY,
                    "description": "Key in the Secret.",
                },
            },
        },
        "An existing Secret in the AIModel's namespace holding the API key, instead of apiKey.",
    ),
    Field(
        "msgBacklogThreshold",
        {"type": "integer", "format": "int32", "minimum": 1},
        "Enables KEDA autoscaling on the Pulsar backlog of topic model-<model>: target messages per worker.",
    ),
    Field(
        "minReplicas",
        {"type": "integer", "format": "int32", "minimum": 0, "maximum": MAX_REPLICAS},
        f"KEDA minimum replica count (default 1, at most {MAX_REPLICAS}).",
    ),
    Field(
        "maxReplicas",
        {"type": "integer", "format": "int32", "minimum": 1, "maximum": MAX_REPLICAS},
        f"KEDA maximum replica count (default {KEDA_DEFAULT_MAX_REPLICAS}, at most {MAX_REPLICAS}).",
    ),
    Field(
        "pollingInterval",
        {"type": "integer", "format": "int32", "minimum": 1, "maximum": 86400},
        "Seconds between KEDA's looks at the backlog while no worker runs (activation from zero) "
        f"and between its scaler checks (default {KEDA_DEFAULT_POLLING_INTERVAL}, KEDA's).",
    ),
    Field(
        "cooldownPeriod",
        {"type": "integer", "format": "int32", "minimum": 0, "maximum": 86400},
        "Seconds KEDA waits after the last queued request before scaling to zero; only with minReplicas 0 "
        f"(default {KEDA_DEFAULT_COOLDOWN_PERIOD}, KEDA's).",
    ),
    Field(
        "scaleDownStabilizationWindowSeconds",
        {"type": "integer", "format": "int32", "minimum": 0, "maximum": HPA_MAX_STABILIZATION_WINDOW},
        "Seconds of backlog history the HPA considers before removing workers "
        f"(default {HPA_DEFAULT_SCALE_DOWN_STABILIZATION}, the HPA's).",
    ),
    Field("template", podtemplate.schema, podtemplate.DESCRIPTION),
)

# Rules the OpenAPI schema alone cannot express. Each message names the field.
SPEC_RULES: tuple[dict[str, str], ...] = (
    {
        "rule": "self.type != 'remote' || has(self.baseURL)",
        "message": "spec.baseURL is required when spec.type is remote",
        "fieldPath": ".baseURL",
        "reason": "FieldValueRequired",
    },
    {
        "rule": "self.type != 'remote' || has(self.apiKey) || has(self.apiKeySecretRef)",
        "message": "spec.apiKey or spec.apiKeySecretRef is required when spec.type is remote",
        "fieldPath": ".apiKey",
        "reason": "FieldValueRequired",
    },
    {
        "rule": "!(has(self.apiKey) && has(self.apiKeySecretRef))",
        "message": "spec.apiKey and spec.apiKeySecretRef are mutually exclusive: set only one",
        "fieldPath": ".apiKeySecretRef",
        "reason": "FieldValueForbidden",
    },
    {
        "rule": "!has(self.minReplicas) || self.minReplicas <= "
        f"(has(self.maxReplicas) ? self.maxReplicas : {KEDA_DEFAULT_MAX_REPLICAS})",
        "message": "spec.minReplicas must be less than or equal to spec.maxReplicas "
        f"(default {KEDA_DEFAULT_MAX_REPLICAS})",
        "fieldPath": ".minReplicas",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "self.model.matches('^[A-Za-z0-9._:-]+$')",
        "message": "spec.model may contain only letters, digits, '.', '_', ':' and '-' "
        "(it forms the Pulsar topic model-<model>)",
        "fieldPath": ".model",
        "reason": "FieldValueInvalid",
    },
)

ROOT_RULES: tuple[dict[str, str], ...] = (
    {
        "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
        "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters: "
        "the operator derives names and labels from it (e.g. <name>-scaledobject)",
        "reason": "FieldValueInvalid",
    },
)

CONDITION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "observedGeneration": {"type": "integer", "format": "int64"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
    },
}

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "state": {"type": "string", "enum": [s.value for s in State], "description": "Running or Failed."},
        "message": {"type": "string", "description": "Why the model is in this state."},
        "observedGeneration": {"type": "integer", "format": "int64"},
        "specResourceVersion": {
            "type": "string",
            "description": "resourceVersion of the AIModel when its current spec was first observed; "
            "worker reports older than this do not apply to the current spec.",
        },
        "replicas": {"type": "integer", "format": "int32", "description": "Worker pods of the Deployment."},
        "readyReplicas": {"type": "integer", "format": "int32", "description": "Ready worker pods."},
        "conditions": {
            "type": "array",
            "items": CONDITION_SCHEMA,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    },
}

PRINTER_COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "State", "type": "string", "jsonPath": ".status.state"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas", "priority": 1},
    # The per-worker backlog KEDA scales to (not the live queue length, which is the HPA's to read).
    {"name": "Backlog/Worker", "type": "integer", "jsonPath": ".spec.msgBacklogThreshold", "priority": 1},
    {
        "name": "Workers",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="WorkersAvailable")].message',
        "priority": 1,
    },
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "priority": 1},
)
