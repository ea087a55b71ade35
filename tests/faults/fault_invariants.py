"""The invariants every fault case ends with.

- every AIModel converges: its status observes its generation, Ready is True,
  and exactly its children exist, each controlled by it (checked by uid);
- no foreign object changed (resourceVersions compared);
- no Secret lost data;
- the operator's write counter is flat once converged;
- the operator process is alive (or was restarted by its health check).
"""

from __future__ import annotations

import base64
import time
from typing import Any

from kube_helpers import Kubectl, OperatorProcess, wait_for

API_VERSION = "model.youxam.com/v1alpha1"


def model_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "AIModel", "metadata": {"name": name}, "spec": dict(spec)}


LOCAL = {"type": "local", "model": "TinyLlama-1.1B", "replicas": 0, "image": "user/image:tag"}
REMOTE = {
    "type": "remote",
    "model": "gpt-4o",
    "apiKey": "sk-fault-test",
    "baseURL": "https://api.openai.com",
    "replicas": 0,
    "image": "user/image:tag",
}


def worker_event(namespace: str, name: str, model: str, message: str, reason: str = "GeneralError") -> dict[str, Any]:
    """A worker's error report on AIModel ``model``: the Warning Event a worker pod creates."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"kind": "AIModel", "name": model, "namespace": namespace},
        "reason": reason,
        "message": message,
        "type": "Warning",
        "source": {"component": "worker"},
    }


def status(k: Kubectl, name: str) -> dict[str, Any]:
    return ((k.get("aimodel", name) or {}).get("status")) or {}


def condition(k: Kubectl, name: str, ctype: str) -> dict[str, Any]:
    return next((c for c in status(k, name).get("conditions") or [] if c.get("type") == ctype), {})


def children_of(name: str, spec: dict[str, Any], per_model_tokens: bool = False) -> dict[str, str]:
    out = {
        "deployment": f"{name}-deployment",
        "serviceaccount": f"{name}-worker",
        "role": f"{name}-worker-events",
        "rolebinding": f"{name}-worker-events",
    }
    if spec.get("apiKey") or per_model_tokens:
        out["secret"] = f"{name}-worker-secrets"
    return out


def _converged(k: Kubectl, models: dict[str, dict[str, Any]], per_model_tokens: bool = False) -> bool | str:
    listed = {m["metadata"]["name"]: m for m in k.json("get", "aimodels")["items"]}
    if set(listed) != set(models):
        return f"models {sorted(listed)} != {sorted(models)}"
    owned: dict[str, set[tuple[str, str]]] = {}
    for kind in ("deployment", "serviceaccount", "role", "rolebinding", "secret"):
        for obj in k.json("get", kind, "-l", "app.kubernetes.io/managed-by=aimodel-operator")["items"]:
            for ref in obj["metadata"].get("ownerReferences") or []:
                if ref.get("controller"):
                    owned.setdefault(ref["uid"], set()).add((kind, obj["metadata"]["name"]))
    for name, spec in models.items():
        obj = listed[name]
        st = obj.get("status") or {}
        if st.get("observedGeneration") != obj["metadata"]["generation"]:
            return f"{name}: observedGeneration {st.get('observedGeneration')}"
        ready = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})
        if ready.get("status") != "True":
            return f"{name}: Ready {ready}"
        want = set(children_of(name, spec, per_model_tokens).items())
        have = owned.pop(obj["metadata"]["uid"], set())
        if have != want:
            return f"{name}: children {sorted(have)} != {sorted(want)}"
        if spec.get("apiKey"):
            secret = k.get("secret", f"{name}-worker-secrets")
            if base64.b64decode(secret["data"].get("API_KEY", "")).decode() != spec["apiKey"]:
                return f"{name}: Secret lost its API_KEY"
        if per_model_tokens and not (k.get("secret", f"{name}-worker-secrets")["data"] or {}).get("PULSAR_TOKEN"):
            return f"{name}: no token of its own"
    if owned:
        return f"children of models that are gone: {owned}"
    return True


def assert_converged(
    k: Kubectl, models: dict[str, dict[str, Any]], timeout: float = 60, per_model_tokens: bool = False
) -> None:
    """``per_model_tokens``: the operator signs a token per model, so every model has a Secret."""
    wait_for(
        f"{len(models)} models converged with exactly their children",
        lambda: _raise_if_str(_converged(k, models, per_model_tokens)),
        timeout=timeout,
    )


def _raise_if_str(result: bool | str) -> bool:
    if isinstance(result, str):
        raise AssertionError(result)
    return result


def assert_writes_flat(operator: OperatorProcess, hold: float = 5.0, timeout: float = 60.0) -> float:
    """Wait until the operator's write counter has not moved for ``hold`` seconds; return the count."""
    deadline = time.monotonic() + timeout
    last = operator.api_writes()
    since = time.monotonic()
    while True:
        time.sleep(0.25)
        now_writes = operator.api_writes()
        now = time.monotonic()
        if now_writes != last:
            last, since = now_writes, now
        elif now - since >= hold:
            return last
        if now >= deadline:
            raise AssertionError(f"the operator kept writing for {timeout}s (now at {now_writes} writes)")


def snapshot(k: Kubectl, kind: str, name: str) -> str:
    """The resourceVersion of a foreign object, to prove later that nothing wrote to it."""
    return k.get(kind, name)["metadata"]["resourceVersion"]


def assert_alive(operator: OperatorProcess) -> None:
    assert operator.proc is not None and operator.proc.poll() is None, operator.log_tail()
    assert operator.healthy("/healthz"), operator.log_tail()
