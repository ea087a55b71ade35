"""A rotated key rolls the workers: the Secret behind apiKeySecretRef, and the operator's PULSAR_TOKEN.
No pod keeps running on an old key, and a change the workers do not use rolls nothing."""

from __future__ import annotations

import base64
import json

from kube_helpers import wait_for

HASH = "model.youxam.com/secret-hash"


def remote(ref: dict) -> dict:
    return {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {"name": "r"},
        "spec": {
            "type": "remote",
            "model": "gpt-3.5-turbo",
            "baseURL": "https://api.example.test",
            "image": "user/image:tag",
            "apiKeySecretRef": ref,
        },
    }


def deployment(k) -> dict:
    return k.get("deployment", "r-deployment") or {}


def pod_hash(k) -> str:
    return ((deployment(k).get("spec") or {}).get("template", {}).get("metadata", {}).get("annotations") or {}).get(
        HASH, ""
    )


def set_key(k, key: str, value: str) -> None:
    patch = {"data": {key: base64.b64encode(value.encode()).decode()}}
    k("patch", "secret", "upstream", "--type=merge", "-p", json.dumps(patch))


def rolled_out(k, generation: int) -> dict | None:
    dep = deployment(k)
    status = dep.get("status") or {}
    done = (
        dep["metadata"]["generation"] > generation
        and status.get("observedGeneration") == dep["metadata"]["generation"]
        and status.get("updatedReplicas") == status.get("replicas") == status.get("readyReplicas") == 1
    )
    return dep if done else None


def test_rotating_the_referenced_key_rolls_the_workers_and_other_keys_do_not(operator, k):
    k("create", "secret", "generic", "upstream", "--from-literal=token=first", "--from-literal=other=x")
    k.apply(remote({"name": "upstream", "key": "token"}))
    k("wait", "--for=condition=Ready", "aimodel/r", "--timeout=60s")
    generation, first = deployment(k)["metadata"]["generation"], pod_hash(k)
    assert first

    # A key the workers do not use changes: nothing to roll. Then the key they use changes: one
    # rollout. Had the first change rolled them too, the generation would have moved twice.
    set_key(k, "other", "y")
    set_key(k, "token", "second")
    dep = wait_for("the workers rolled onto the new key", lambda: rolled_out(k, generation), timeout=60)
    assert dep["metadata"]["generation"] == generation + 1
    assert pod_hash(k) != first
    pods = k.json("get", "pods", "-l", "model.youxam.com/aimodel=r")["items"]
    assert {p["metadata"]["annotations"][HASH] for p in pods if not p["metadata"].get("deletionTimestamp")} == {
        pod_hash(k)
    }
    k("wait", "--for=condition=Ready", "aimodel/r", "--timeout=60s")


def test_a_missing_key_does_not_roll_running_workers_onto_nothing(operator, k):
    k("create", "secret", "generic", "upstream", "--from-literal=token=first")
    k.apply(remote({"name": "upstream", "key": "token"}))
    k("wait", "--for=condition=Ready", "aimodel/r", "--timeout=60s")
    generation, first = deployment(k)["metadata"]["generation"], pod_hash(k)
    k("patch", "secret", "upstream", "--type=json", "-p", '[{"op":"remove","path":"/data/token"}]')
    wait_for(
        "the missing key reported",
        lambda: 'has no key "token"' in ((k.get("aimodel", "r") or {}).get("status") or {}).get("message", ""),
    )
    assert deployment(k)["metadata"]["generation"] == generation and pod_hash(k) == first
    # The key is back with a new value: now the workers roll onto it.
    set_key(k, "token", "second")
    wait_for("the workers rolled onto the new key", lambda: rolled_out(k, generation), timeout=60)
    assert pod_hash(k) != first


def test_a_new_pulsar_token_rolls_the_workers(operator_process, k):
    operator_process.stop()
    operator_process.start({"PULSAR_TOKEN": "token-one"})
    k.apply(
        {
            "apiVersion": "model.youxam.com/v1alpha1",
            "kind": "AIModel",
            "metadata": {"name": "r"},
            "spec": {"type": "local", "model": "m", "image": "user/image:tag"},
        }
    )
    k("wait", "--for=condition=Ready", "aimodel/r", "--timeout=60s")
    generation, first = deployment(k)["metadata"]["generation"], pod_hash(k)
    operator_process.stop()
    operator_process.start({"PULSAR_TOKEN": "token-two"})
    wait_for("the workers rolled onto the new token", lambda: rolled_out(k, generation), timeout=60)
    assert pod_hash(k) != first
    secret = k.get("secret", "r-worker-secrets")
    assert base64.b64decode(secret["data"]["PULSAR_TOKEN"]).decode() == "token-two"
    operator_process.stop()
