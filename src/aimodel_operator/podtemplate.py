"""``spec.template``: the shape of the workers' pod an AIModel may set, and what it may not.

The schema is Kubernetes' own pod template, from the OpenAPI of the pinned
version (``hack/podtemplate_schema.py`` writes ``schemas/podtemplate.json``),
so that ``kubectl explain`` answers for every field and a typo is refused.
The rules below, checked by the API server at admission, refuse what would
break the worker's contract, each naming the field.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from aimodel_contract import WORKER_ENV

WORKER = "worker"
# The labels the operator puts on every worker pod (its Deployment selects by them).
RESERVED_LABELS = (
    "model.youxam.com/aimodel",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
)

SPEC_RULES: tuple[dict[str, str], ...] = (
    {
        "rule": "!has(self.serviceAccountName)",
        "message": "spec.template.spec.serviceAccountName may not be set: the workers run as the "
        "ServiceAccount the operator makes for them, which lets them report errors",
        "fieldPath": ".serviceAccountName",
        "reason": "FieldValueForbidden",
    },
    {
        "rule": "!has(self.automountServiceAccountToken) || self.automountServiceAccountToken",
        "message": "spec.template.spec.automountServiceAccountToken may not be false: "
        "the worker needs its token to report errors",
        "fieldPath": ".automountServiceAccountToken",
        "reason": "FieldValueForbidden",
    },
    {
        "rule": f"!has(self.initContainers) || self.initContainers.all(c, c.name != '{WORKER}')",
        "message": f"spec.template.spec.initContainers: the name {WORKER} is the worker container's",
        "fieldPath": ".initContainers",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": f"!has(self.containers) || self.containers.all(c, c.name != '{WORKER}' || !has(c.image))",
        "message": f"spec.template.spec.containers[{WORKER}].image may not be set: the worker's image is spec.image",
        "fieldPath": ".containers",
        "reason": "FieldValueForbidden",
    },
    {
        "rule": f"!has(self.containers) || self.containers.all(c, c.name == '{WORKER}' || has(c.image))",
        "message": "spec.template.spec.containers: every container other than the worker needs an image",
        "fieldPath": ".containers",
        "reason": "FieldValueRequired",
    },
    # One rule per variable, so that the refusal names it (a message computed by filtering the
    # lists costs more than the API server allows).
    *(
        {
            "rule": f"!has(self.containers) || self.containers.all(c, c.name != '{WORKER}' || !has(c.env) || "
            f"!c.env.exists(e, e.name == '{name}'))",
            "message": f"spec.template.spec.containers[{WORKER}].env: {name} is set by the operator "
            "and may not be overridden",
            "fieldPath": ".containers",
            "reason": "FieldValueForbidden",
        }
        for name in WORKER_ENV
    ),
)

METADATA_RULES: tuple[dict[str, str], ...] = (
    {
        # Key lookups: constant cost, however many labels there are.
        "rule": "!has(self.labels) || !(" + " || ".join(f"'{label}' in self.labels" for label in RESERVED_LABELS) + ")",
        "message": "spec.template.metadata.labels: "
        + ", ".join(RESERVED_LABELS)
        + " are the operator's (its Deployment selects the workers by them)",
        "fieldPath": ".labels",
        "reason": "FieldValueForbidden",
    },
)

DESCRIPTION = (
    "The workers' pod: labels, annotations and pod spec fields merged into the pod the operator builds. "
    "A container named worker adds to the worker container (resources, env, volumeMounts, probes, "
    "securityContext, ...); other containers and initContainers (native sidecars too) are added as given."
)


@cache
def schema() -> dict[str, Any]:
    """The ``spec.template`` schema, with its admission rules."""
    text = resources.files("aimodel_operator").joinpath("schemas/podtemplate.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    loaded["properties"]["spec"]["x-kubernetes-validations"] = list(SPEC_RULES)
    loaded["properties"]["metadata"]["x-kubernetes-validations"] = list(METADATA_RULES)
    return loaded
