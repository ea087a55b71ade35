"""Hostile input: names that climb to other namespaces, labels removed, names taken, garbled messages.

Each case ends with the fault suite's invariants: the model converges (or
says why not), no foreign object is modified, no Secret loses data, and the
operator's writes are flat once it has converged.
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
from fault_invariants import REMOTE, assert_writes_flat, condition, model_manifest, status, worker_event

from kube_helpers import wait_for


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ({"name": "../../kube-system/secrets/x"}, "spec.apiKeySecretRef.name"),
        ({"name": "a/b"}, "spec.apiKeySecretRef.name"),
        ({"name": ".."}, "spec.apiKeySecretRef.name"),
        ({"name": "ok", "key": "../x"}, "spec.apiKeySecretRef.key"),
    ],
)
def test_secret_ref_that_climbs_out_is_refused_naming_the_field(crds_installed, k, ref, field):
    spec = {k_: v for k_, v in REMOTE.items() if k_ != "apiKey"}
    res = k.run(
        "apply", "-f", "-", input=json.dumps(model_manifest("m", {**spec, "apiKeySecretRef": ref})), check=False
    )
    assert res.returncode != 0
    assert field in res.stderr, res.stderr


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"baseURL": "file:///etc/passwd"}, "spec.baseURL"),
        ({"baseURL": "gopher://internal:70/"}, "spec.baseURL"),
        ({"replicas": 100000}, "spec.replicas"),
        ({"maxProcessNum": 100000}, "spec.maxProcessNum"),
        ({"msgBacklogThreshold": 2, "maxReplicas": 5000}, "spec.maxReplicas"),
        ({"msgBacklogThreshold": 2, "minReplicas": 5000}, "spec.minReplicas"),
    ],
)
def test_schemes_and_sizes_out_of_bounds_are_refused_naming_the_field(crds_installed, k, change, field):
    res = k.run("apply", "-f", "-", input=json.dumps(model_manifest("m", {**REMOTE, **change})), check=False)
    assert res.returncode != 0
    assert field in res.stderr, res.stderr


def test_secret_ref_changes_are_noticed_through_the_watch(operator, k, namespace):
    """A missing apiKeySecretRef Secret is reported, then noticed at once when it appears or gains its key."""
    spec = {k_: v for k_, v in REMOTE.items() if k_ != "apiKey"}
    k.apply(model_manifest("m", {**spec, "apiKeySecretRef": {"name": "later", "key": "token"}}))
    wait_for("APIKeySecretNotFound", lambda: condition(k, "m", "Ready").get("reason") == "APIKeySecretNotFound")
    k("create", "secret", "generic", "later", "--from-literal=other=x")
    wait_for(
        "the missing key named",
        lambda: 'has no key "token"' in condition(k, "m", "Ready").get("message", ""),
        timeout=5,
    )
    k("patch", "secret", "later", "--type=merge", "-p", json.dumps({"stringData": {"token": "x"}}))
    wait_for("Ready once the key exists", lambda: condition(k, "m", "Ready").get("status") == "True", timeout=5)


CHILD_KINDS = ["serviceaccount", "role", "rolebinding", "secret", "deployment"]


def _children(name: str) -> dict[str, str]:
    return {
        "deployment": f"{name}-deployment",
        "serviceaccount": f"{name}-worker",
        "role": f"{name}-worker-events",
        "rolebinding": f"{name}-worker-events",
        "secret": f"{name}-worker-secrets",
    }


@pytest.mark.parametrize("kind", CHILD_KINDS)
def test_removed_managed_by_label_is_restored_and_nothing_is_lost(operator, k, kind):
    k.apply(model_manifest("m", REMOTE))
    wait_for("Ready", lambda: condition(k, "m", "Ready").get("status") == "True", timeout=30)
    name = _children("m")[kind]
    before = k.get(kind, name)
    k("label", kind, name, "app.kubernetes.io/managed-by-")
    restored = wait_for(
        "the label restored",
        lambda: (
            (k.get(kind, name) or {}).get("metadata", {}).get("labels", {}).get("app.kubernetes.io/managed-by")
            == "aimodel-operator"
            and k.get(kind, name)
        ),
        timeout=15,
    )
    # Adopted again, not taken for a stranger: nothing the operator owned was given back.
    assert restored["metadata"]["uid"] == before["metadata"]["uid"]
    assert restored["metadata"]["ownerReferences"] == before["metadata"]["ownerReferences"]
    secret = k.get("secret", _children("m")["secret"])
    assert base64.b64decode(secret["data"]["API_KEY"]).decode() == REMOTE["apiKey"]
    role = k.get("role", _children("m")["role"])
    assert role["rules"], "the Role lost its rules"
    assert condition(k, "m", "Ready").get("reason") != "ChildConflict"
    assert_writes_flat(operator)


# What must not be applied while a child's name is someone else's.
BLOCKED_BY = {
    "serviceaccount": ("deployment", "rolebinding"),
    "role": ("rolebinding",),
    "secret": ("deployment",),
    "rolebinding": (),
    "deployment": (),
}


def _foreign(kind: str, name: str, labelled: bool) -> dict:
    meta = {"name": name, "labels": {"app.kubernetes.io/managed-by": "aimodel-operator"} if labelled else {"x": "y"}}
    body: dict = {"serviceaccount": {}, "secret": {"stringData": {"API_KEY": "theirs"}}}.get(kind, {})
    if kind == "role":
        body = {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}
    if kind == "rolebinding":
        body = {
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "theirs"},
            "subjects": [{"kind": "ServiceAccount", "name": "default"}],
        }
    if kind == "deployment":
        body = {
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "theirs"}},
                "template": {
                    "metadata": {"labels": {"app": "theirs"}},
                    "spec": {"containers": [{"name": "c", "image": "someone/else:1"}]},
                },
            }
        }
    api_version = {"role": "rbac.authorization.k8s.io/v1", "rolebinding": "rbac.authorization.k8s.io/v1"}.get(
        kind, "apps/v1" if kind == "deployment" else "v1"
    )
    kind_name = {
        "serviceaccount": "ServiceAccount",
        "role": "Role",
        "rolebinding": "RoleBinding",
        "secret": "Secret",
        "deployment": "Deployment",
    }[kind]
    return {"apiVersion": api_version, "kind": kind_name, "metadata": meta, **body}


@pytest.mark.parametrize("labelled", [False, True], ids=["plain", "with-our-label"])
@pytest.mark.parametrize("kind", CHILD_KINDS)
def test_foreign_object_under_a_child_name_is_never_written(operator, k, kind, labelled):
    name = _children("m")[kind]
    k.apply(_foreign(kind, name, labelled))
    foreign = k.get(kind, name)
    # Every change of the foreign object is seen, also one undone at once ("not even for a moment").
    watch = subprocess.Popen(
        [
            k.binary,
            "--kubeconfig",
            str(k.kubeconfig),
            "-n",
            k.namespace,
            "get",
            kind,
            name,
            "--watch-only",
            "--output-watch-events",
            "-o",
            'jsonpath={.type} {.object.metadata.resourceVersion}{"\\n"}',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        k.apply(model_manifest("m", REMOTE))
        cond = wait_for(
            "Ready=False ChildConflict",
            lambda: condition(k, "m", "Ready").get("reason") == "ChildConflict" and status(k, "m"),
        )
        assert "already exists and is not managed by this AIModel" in cond["message"]
        for blocked in BLOCKED_BY[kind]:
            assert k.get(blocked, _children("m")[blocked]) is None, f"{blocked} applied though {kind} is not ours"
        assert_writes_flat(operator)
    finally:
        watch.terminate()
        seen = watch.communicate(timeout=10)[0]
    assert "MODIFIED" not in seen, f"the foreign {kind} was modified: {seen}"
    after = k.get(kind, name)
    assert after["metadata"]["resourceVersion"] == foreign["metadata"]["resourceVersion"], "foreign object modified"
    managers = {m["manager"] for m in k.json("get", kind, name, "--show-managed-fields")["metadata"]["managedFields"]}
    assert "aimodel-operator" not in managers
    # The name freed, the model converges by itself (the operator looks again, reading only).
    k("delete", kind, name)
    wait_for("Ready once the name is free", lambda: condition(k, "m", "Ready").get("status") == "True", timeout=45)
    for child_kind, child in _children("m").items():
        obj = k.get(child_kind, child)
        assert obj is not None and obj["metadata"]["ownerReferences"][0]["name"] == "m", child_kind


def test_garbled_messages_are_made_printable(operator, k, kubectl, namespace):
    k.apply(model_manifest("m", REMOTE))
    wait_for("Ready", lambda: condition(k, "m", "Ready").get("status") == "True", timeout=30)
    event = worker_event(namespace, "m.garbled", "m", "PLACEHOLDER")
    raw = json.dumps(event).encode().replace(b"PLACEHOLDER", b"red\\u001b[31m bell\\u0007 nul\\u0000 bad\\xff\\xfe end")
    res = subprocess.run(
        [kubectl.binary, "--kubeconfig", str(kubectl.kubeconfig), "create", "-f", "-"],
        input=raw,
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    st = wait_for("Failed", lambda: status(k, "m").get("state") == "Failed" and status(k, "m"))
    message = st["message"]
    assert message.startswith("GeneralError: red")
    assert message.endswith(" end")
    assert not any(ord(c) < 32 and c not in "\t\n" for c in message), repr(message)
    assert "\x7f" not in message
    # kubectl shows it in a table without breaking.
    assert "Failed" in k("get", "aimodel", "m", "-o", "wide")
    assert_writes_flat(operator)


def test_a_model_recreated_at_once_under_its_name_gets_its_own_children(operator, k):
    """The children of the deleted namesake are neither adopted nor reported as a clash: they are collected."""
    k.apply(model_manifest("m", REMOTE))
    wait_for("Ready", lambda: condition(k, "m", "Ready").get("status") == "True", timeout=30)
    old_uid = k.get("aimodel", "m")["metadata"]["uid"]
    k("delete", "aimodel", "m", "--wait=false")
    k.apply(model_manifest("m", dict(REMOTE, image="user/image:v2")))
    new_uid = (
        wait_for(
            "the new model", lambda: (k.get("aimodel", "m") or {}).get("metadata", {}).get("uid") not in (None, old_uid)
        )
        and k.get("aimodel", "m")["metadata"]["uid"]
    )

    def owned_by_new() -> bool:
        for kind, name in _children("m").items():
            obj = k.get(kind, name)
            if obj is None or obj["metadata"]["ownerReferences"][0]["uid"] != new_uid:
                return False
        return True

    wait_for("every child owned by the new model", owned_by_new, timeout=60)
    wait_for("Ready", lambda: condition(k, "m", "Ready").get("status") == "True", timeout=30)
    assert k.get("deployment", "m-deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == "user/image:v2"
    assert condition(k, "m", "Ready").get("reason") != "ChildConflict"
    assert_writes_flat(operator)
