"""The workers' pod: what the operator sets, merged with the AIModel's ``spec.template``.

Like a strategic merge by container name: a container named ``worker`` adds to
the operator's worker container; other containers, init containers (native
sidecars too) and volumes are added as given; pod-level fields are taken as
given. What the worker's contract needs is the operator's and wins: the
image, the environment the operator sets, the ServiceAccount, the labels the
Deployment selects by. The API server refuses a template that tries (the
CRD's rules, ``podtemplate.py``); the merge keeps the contract even so.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from aimodel_contract import WORKER_ENV

from ..podtemplate import WORKER

# The restricted Pod Security profile, for the worker container. A template may loosen it
# (its securityContext fields win) where the namespace allows.
RESTRICTED: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Pod spec fields a template sets as given (containers and initContainers are merged by name).
POD_FIELDS = (
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "runtimeClassName",
    "imagePullSecrets",
    "securityContext",
    "volumes",
    "terminationGracePeriodSeconds",
)
# Lists of the worker container a template adds to (after the operator's own items).
ADDED_LISTS = ("env", "envFrom", "volumeMounts", "ports")
MANAGED_ENV = frozenset(WORKER_ENV)


def worker_container(
    image: str, env: list[dict[str, Any]], given: dict[str, Any] | None, mounts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The worker container: the operator's image, env and ``mounts``, restricted by default, plus
    what the template's ``worker`` container adds."""
    given = copy.deepcopy(given or {})
    container: dict[str, Any] = {"name": WORKER, "image": image, "env": env}
    if mounts:
        container["volumeMounts"] = list(mounts)
    for field, value in given.items():
        if field in ("name", "image", "securityContext"):
            continue
        if field in ADDED_LISTS:
            if field == "env":
                value = [e for e in value if e.get("name") not in MANAGED_ENV]
            elif field == "volumeMounts":
                taken = {m["mountPath"] for m in mounts or []}
                value = [m for m in value if m.get("mountPath") not in taken]
            container[field] = container.get(field, []) + value
        else:
            container[field] = value
    security = given.get("securityContext") or {}
    defaults = copy.deepcopy(RESTRICTED)
    if security.get("privileged"):
        # A privileged container may not forbid privilege escalation (the API server refuses both).
        defaults.pop("allowPrivilegeEscalation")
    container["securityContext"] = {**defaults, **security}
    return container


def pod_template(
    template: dict[str, Any] | None,
    labels: dict[str, str],
    annotations: dict[str, str],
    service_account: str,
    image: str,
    env: list[dict[str, Any]],
    volumes: Sequence[tuple[dict[str, Any], dict[str, Any]]] = (),
) -> dict[str, Any]:
    """The Deployment's pod template: the operator's labels, annotations, ServiceAccount and
    worker container, merged with the AIModel's ``spec.template``. ``volumes``: the operator's
    own (volume, the worker's mount of it), ahead of the template's (which cannot replace them)."""
    template = template or {}
    given_meta = template.get("metadata") or {}
    given = template.get("spec") or {}
    containers = given.get("containers") or []
    worker = next((c for c in containers if c.get("name") == WORKER), None)
    spec: dict[str, Any] = {
        "serviceAccountName": service_account,
        "containers": [worker_container(image, env, worker, [m for _, m in volumes])]
        + [copy.deepcopy(c) for c in containers if c.get("name") != WORKER],
    }
    init = [copy.deepcopy(c) for c in given.get("initContainers") or [] if c.get("name") != WORKER]
    if init:
        spec["initContainers"] = init
    for field in POD_FIELDS:
        if field in given:
            spec[field] = copy.deepcopy(given[field])
    if volumes:
        own = [v for v, _ in volumes]
        names = {v["name"] for v in own}
        spec["volumes"] = own + [v for v in spec.get("volumes") or [] if v.get("name") not in names]
    metadata: dict[str, Any] = {"labels": {**(given_meta.get("labels") or {}), **labels}}
    metadata["annotations"] = {**(given_meta.get("annotations") or {}), **annotations}
    return {"metadata": metadata, "spec": spec}
