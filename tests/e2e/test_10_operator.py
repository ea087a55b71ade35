"""The operator on the real control plane: children, status, validation, drift, GC, restarts."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from kube_helpers import drop_namespace, wait_for

LOCAL_SAMPLE = {
    "apiVersion": "model.youxam.com/v1alpha1",
    "kind": "AIModel",
    "metadata": {"name": "ai-model-sample", "labels": {"app": "ai-model"}},
    "spec": {
        "type": "local",
        "model": "TinyLlama-1.1B",
        "replicas": 3,
        "image": "user/image:tag",
        "maxProcessNum": 256,
    },
}

REMOTE_SAMPLE = {
    "apiVersion": "model.youxam.com/v1alpha1",
    "kind": "AIModel",
    "metadata": {"name": "ai-model-sample"},
    "spec": {
        "type": "remote",
        "model": "gpt-3.5-turbo",
        "apiKey": "xxxxxxx-secret-key",
        "baseURL": "https://api.openai.com",
        "replicas": 3,
        "image": "user/image:tag",
        "maxProcessNum": 256,
    },
}

LOCAL_CHILDREN = (
    ("deployment", "ai-model-sample-deployment"),
    ("serviceaccount", "ai-model-sample-worker"),
    ("role", "ai-model-sample-worker-events"),
    ("rolebinding", "ai-model-sample-worker-events"),
)
# A model with an inline key also has a Secret (a local one has nothing secret to hold).
CHILDREN = (*LOCAL_CHILDREN, ("secret", "ai-model-sample-worker-secrets"))


def model(spec_overrides=None, name="ai-model-sample", base=LOCAL_SAMPLE):
    obj = json.loads(json.dumps(base))
    obj["metadata"]["name"] = name
    obj["spec"].update(spec_overrides or {})
    return obj


def status(k, name="ai-model-sample"):
    obj = k.get("aimodel", name)
    return (obj or {}).get("status") or {}


def worker_event(namespace, name, reason, message, event_name=None, involved_namespace=None):
    """A Warning event exactly as the uplion reference worker creates it: no apiVersion, no uid."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name or f"{name}.{time.time_ns():x}", "namespace": namespace},
        "involvedObject": {"kind": "AIModel", "name": name, "namespace": involved_namespace or namespace},
        "reason": reason,
        "message": message,
        "type": "Warning",
        "source": {"component": "ai-model-worker"},
        "count": 1,
    }


def env_of(deployment):
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_seed_local_sample_runs_three_workers_and_prints_seed_columns(operator, k):
    k.apply(LOCAL_SAMPLE)
    wait_for(
        "3 Running worker pods",
        lambda: (
            [
                p
                for p in k.json("get", "pods", "-l", "model.youxam.com/aimodel=ai-model-sample")["items"]
                if p["status"].get("phase") == "Running"
            ].__len__()
            == 3
        ),
        timeout=60,
    )
    pods = k("get", "pods", "-o", "name").split()
    assert len(pods) == 3
    assert all(re.fullmatch(r"pod/ai-model-sample-deployment-[a-z0-9]+-[a-z0-9]{5}", p) for p in pods), pods
    wait_for("state Running", lambda: status(k).get("state") == "Running")
    k("wait", "--for=condition=Ready", "aimodel/ai-model-sample", "--timeout=60s")
    out = k("get", "aimodel")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "MODEL", "REPLICAS", "STATE"]
    assert lines[1].split() == ["ai-model-sample", "local", "TinyLlama-1.1B", "3", "Running"]
    wide = k("get", "aimodel", "-o", "wide").splitlines()[0].split()
    assert wide[:5] == ["NAME", "TYPE", "MODEL", "REPLICAS", "STATE"] and len(wide) > 5
    deploy = k("get", "deploy", "ai-model-sample-deployment").splitlines()[1].split()
    assert deploy[:4] == ["ai-model-sample-deployment", "3/3", "3", "3"]
    st = status(k)
    assert st["readyReplicas"] == 3 and st["replicas"] == 3 and st["observedGeneration"] == 1


def test_children_env_ownership_and_rbac(operator, k, namespace):
    k.apply(model({"apiKey": None}))
    wait_for("the Deployment", lambda: k.get("deployment", "ai-model-sample-deployment"))
    aimodel = k.get("aimodel", "ai-model-sample")
    assert k.get("secret", "ai-model-sample-worker-secrets") is None
    for kind, name in LOCAL_CHILDREN:
        obj = wait_for(f"{kind} {name}", lambda kind=kind, name=name: k.get(kind, name))
        refs = obj["metadata"]["ownerReferences"]
        assert refs == [
            {
                "apiVersion": "model.youxam.com/v1alpha1",
                "kind": "AIModel",
                "name": "ai-model-sample",
                "uid": aimodel["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        fields = k.json("get", kind, name, "--show-managed-fields")["metadata"]["managedFields"]
        assert {m["manager"] for m in fields if m["operation"] == "Apply"} == {"aimodel-operator"}
    env = env_of(k.get("deployment", "ai-model-sample-deployment"))
    assert env["NODE_TYPE"]["value"] == "local"
    assert env["MODEL_NAME"]["value"] == "TinyLlama-1.1B"
    assert "value" not in env["API_URL"]
    assert env["MAX_PROCESS_NUM"]["value"] == "256"
    assert env["AIMODEL_NAME"]["value"] == "ai-model-sample"
    assert env["AIMODEL_NAMESPACE"]["value"] == namespace
    assert env["PULSAR_URL"]["value"] == "pulsar://localhost:6650"
    assert env["RES_TOPIC_NAME"]["value"] == "res-topic"
    # Nothing secret to deliver: both present and empty.
    assert env["API_KEY"] == {"name": "API_KEY"} and env["PULSAR_TOKEN"] == {"name": "PULSAR_TOKEN"}
    assert "PULSAR_ADMIN_URL" not in env
    # The worker's ServiceAccount may create and patch events here, and nothing else.
    sa = f"system:serviceaccount:{namespace}:ai-model-sample-worker"
    assert k("auth", "can-i", "create", "events", f"--as={sa}").strip() == "yes"
    assert k("auth", "can-i", "patch", "events", f"--as={sa}").strip() == "yes"
    for verb, resource in (("list", "events"), ("get", "secrets"), ("create", "pods"), ("patch", "aimodels")):
        res = k.run("auth", "can-i", verb, resource, f"--as={sa}", check=False)
        assert res.stdout.strip() == "no", (verb, resource)
    res = k.run("auth", "can-i", "create", "events", f"--as={sa}", "-n", "default", check=False)
    assert res.stdout.strip() == "no"


def test_remote_model_keeps_key_out_of_the_deployment(operator, k):
    k.apply(REMOTE_SAMPLE)
    deployment = wait_for("the Deployment", lambda: k.get("deployment", "ai-model-sample-deployment"))
    assert "xxxxxxx-secret-key" not in json.dumps(deployment)
    env = env_of(deployment)
    assert env["NODE_TYPE"]["value"] == "remote"
    assert env["API_URL"]["value"] == "https://api.openai.com"
    assert env["API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "ai-model-sample-worker-secrets", "key": "API_KEY"}
    secret = k.get("secret", "ai-model-sample-worker-secrets")
    assert base64.b64decode(secret["data"]["API_KEY"]).decode() == "xxxxxxx-secret-key"
    assert "PULSAR_TOKEN" not in secret["data"]
    # Switching to a key from a Secret of one's own deletes the operator's Secret.
    k("create", "secret", "generic", "mine", "--from-literal=apiKey=k")
    spec = {k_: v for k_, v in REMOTE_SAMPLE["spec"].items() if k_ != "apiKey"}
    k.apply({**REMOTE_SAMPLE, "spec": {**spec, "apiKeySecretRef": {"name": "mine"}}})
    wait_for("the unneeded Secret deleted", lambda: k.get("secret", "ai-model-sample-worker-secrets") is None)
    assert k.get("secret", "mine") is not None


def test_api_key_secret_ref(operator, k):
    k("create", "secret", "generic", "upstream", "--from-literal=token=abc")
    spec = dict(REMOTE_SAMPLE["spec"])
    del spec["apiKey"]
    spec["apiKeySecretRef"] = {"name": "upstream", "key": "token"}
    k.apply({**REMOTE_SAMPLE, "spec": spec})
    deployment = wait_for("the Deployment", lambda: k.get("deployment", "ai-model-sample-deployment"))
    assert env_of(deployment)["API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "upstream", "key": "token"}
    assert k.get("secret", "ai-model-sample-worker-secrets") is None
    k("wait", "--for=condition=Ready", "aimodel/ai-model-sample", "--timeout=60s")


def test_missing_api_key_secret_is_reported_then_found(operator, k):
    spec = {k_: v for k_, v in REMOTE_SAMPLE["spec"].items() if k_ != "apiKey"}
    k.apply({**REMOTE_SAMPLE, "spec": {**spec, "apiKeySecretRef": {"name": "later", "key": "token"}}})
    ready = wait_for(
        "Ready=False APIKeySecretNotFound",
        lambda: next((c for c in status(k).get("conditions", []) if c["reason"] == "APIKeySecretNotFound"), None),
    )
    assert ready["type"] == "Ready" and ready["status"] == "False"
    assert 'spec.apiKeySecretRef: Secret "later" does not exist' in status(k)["message"]
    assert status(k)["state"] == "Running"
    wait_for(
        "a Warning event naming the field",
        lambda: any(
            e["reason"] == "APIKeySecretNotFound" and "spec.apiKeySecretRef" in e["message"]
            for e in k.json("get", "events", "--field-selector=involvedObject.name=ai-model-sample")["items"]
        ),
    )
    k("create", "secret", "generic", "later", "--from-literal=other=x")
    wait_for("the missing key reported", lambda: 'has no key "token"' in status(k).get("message", ""), timeout=40)
    k("create", "secret", "generic", "later2", "--from-literal=token=x")
    k("patch", "aimodel", "ai-model-sample", "--type=merge", "-p", '{"spec":{"apiKeySecretRef":{"name":"later2"}}}')
    k("wait", "--for=condition=Ready", "aimodel/ai-model-sample", "--timeout=60s")
    assert status(k)["message"] == "Deployment ai-model-sample-deployment is up to date"
    wait_for(
        "an Event saying the problem is resolved",
        lambda: any(
            e["reason"] == "ProblemResolved"
            for e in k.json("get", "events", "--field-selector=involvedObject.name=ai-model-sample")["items"]
        ),
    )


REFUSALS = [
    ({"type": "cloud"}, "spec.type"),
    ({"model": None}, "spec.model"),
    ({"image": None}, "spec.image"),
    ({"replicas": -1}, "spec.replicas"),
    ({"maxProcessNum": 0}, "spec.maxProcessNum"),
    ({"msgBacklogThreshold": 0}, "spec.msgBacklogThreshold"),
    ({"type": "remote", "apiKey": "k"}, "spec.baseURL is required when spec.type is remote"),
    ({"type": "remote", "baseURL": "https://x"}, "spec.apiKey or spec.apiKeySecretRef is required"),
    ({"minReplicas": 5, "maxReplicas": 2, "msgBacklogThreshold": 2}, "spec.minReplicas must be less than"),
    ({"minReplicas": 150, "msgBacklogThreshold": 2}, "spec.minReplicas must be less than or equal to spec.maxReplicas"),
    ({"model": "a/b"}, "spec.model may contain only"),
]


@pytest.mark.parametrize(("overrides", "message"), REFUSALS, ids=[m for _, m in REFUSALS])
def test_invalid_aimodels_are_refused_with_the_field_named(crds_installed, k, overrides, message):
    obj = model()
    for key, value in overrides.items():
        if value is None:
            obj["spec"].pop(key, None)
        else:
            obj["spec"][key] = value
    res = k.run("apply", "-f", "-", input=json.dumps(obj), check=False)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr
    assert k.get("aimodel", "ai-model-sample") is None


def test_too_long_name_is_refused(crds_installed, k):
    res = k.run("apply", "-f", "-", input=json.dumps(model(name="m" * 51)), check=False)
    assert res.returncode != 0 and "metadata.name must be at most 50 characters" in res.stderr, res.stderr
    k.apply(model(name="m" * 50))


def test_defaults_are_filled_by_the_api_server(crds_installed, k):
    obj = model()
    del obj["spec"]["replicas"]
    del obj["spec"]["maxProcessNum"]
    k.apply(obj)
    spec = k.get("aimodel", "ai-model-sample")["spec"]
    assert spec["replicas"] == 1 and spec["maxProcessNum"] == 128


def test_worker_error_fails_model_and_spec_change_resets(operator, k, namespace):
    k.apply(LOCAL_SAMPLE)
    wait_for("state Running", lambda: status(k).get("state") == "Running")
    message = 'Local model "not-found-model" is not supported.'
    k("create", "-f", "-", input=json.dumps(worker_event(namespace, "ai-model-sample", "ConfigurationError", message)))
    wait_for("state Failed", lambda: status(k).get("state") == "Failed")
    assert status(k)["message"] == f"ConfigurationError: {message}"
    line = k("get", "aimodel").splitlines()[1].split()
    assert line == ["ai-model-sample", "local", "TinyLlama-1.1B", "3", "Failed"]
    described = k("describe", "aimodel", "ai-model-sample")
    assert re.search(r"Message:\s+ConfigurationError: Local model \"not-found-model\" is not supported\.", described)
    assert re.search(r"State:\s+Failed", described)
    ready = next(c for c in status(k)["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "WorkerReportedError"

    k("patch", "aimodel", "ai-model-sample", "--type=merge", "-p", '{"spec":{"replicas":2}}')
    wait_for("state Running after the spec change", lambda: status(k).get("state") == "Running")
    described = k("describe", "aimodel", "ai-model-sample")
    assert re.search(r"State:\s+Running", described) and re.search(r"Message:\s+\S", described)
    assert status(k)["observedGeneration"] == 2

    k("create", "-f", "-", input=json.dumps(worker_event(namespace, "ai-model-sample", "GeneralError", "again")))
    wait_for("state Failed again", lambda: status(k).get("message") == "GeneralError: again")


def test_repeated_event_counts_as_new_report(operator, k, namespace):
    k.apply(LOCAL_SAMPLE)
    ev = worker_event(namespace, "ai-model-sample", "AuthenticationError", "bad key", event_name="worker.repeat")
    k("create", "-f", "-", input=json.dumps(ev))
    wait_for("state Failed", lambda: status(k).get("state") == "Failed")
    k("patch", "aimodel", "ai-model-sample", "--type=merge", "-p", '{"spec":{"replicas":1}}')
    wait_for("state Running", lambda: status(k).get("state") == "Running")
    # The usual way a repeat is recorded: same event, count and lastTimestamp bumped.
    k("patch", "event", "worker.repeat", "--type=merge", "-p", '{"count":2,"lastTimestamp":"2030-01-01T00:00:00Z"}')
    wait_for("state Failed after the repeat", lambda: status(k).get("state") == "Failed")
    assert status(k)["message"] == "AuthenticationError: bad key"


def test_ignored_events(operator, k, kubectl, namespace):
    k.apply(LOCAL_SAMPLE)
    wait_for("state Running", lambda: status(k).get("state") == "Running")
    other = f"{namespace}-other"
    kubectl("create", "namespace", other)
    try:
        # An event in another namespace naming this model (involvedObject.namespace says ours).
        kubectl.in_namespace(other)(
            "create",
            "-f",
            "-",
            input=json.dumps(
                worker_event(other, "ai-model-sample", "GeneralError", "cross", involved_namespace=namespace)
            ),
            check=False,
        )
        kubectl.in_namespace(other)(
            "create", "-f", "-", input=json.dumps(worker_event(other, "ai-model-sample", "GeneralError", "cross2"))
        )
        ignored = [
            {**worker_event(namespace, "ai-model-sample", "GeneralError", "normal"), "type": "Normal"},
            worker_event(namespace, "ai-model-sample", "NotAWorkerReason", "unknown reason"),
            {
                **worker_event(namespace, "ai-model-sample", "GeneralError", "own"),
                "source": {"component": "aimodel-operator"},
            },
            worker_event(namespace, "no-such-model", "GeneralError", "unknown model"),
        ]
        for ev in ignored:
            k("create", "-f", "-", input=json.dumps(ev))
        # A marker event processed after the ignored ones proves the operator has seen them.
        k.apply(model(name="marker"))
        k("create", "-f", "-", input=json.dumps(worker_event(namespace, "marker", "GeneralError", "marker")))
        wait_for("the marker model Failed", lambda: status(k, "marker").get("state") == "Failed")
        assert status(k)["state"] == "Running"
        assert k.get("aimodel", "no-such-model") is None
    finally:
        drop_namespace(kubectl, other)


def test_long_message_is_bounded(operator, k, namespace):
    k.apply(LOCAL_SAMPLE)
    k("create", "-f", "-", input=json.dumps(worker_event(namespace, "ai-model-sample", "GeneralError", "x" * 5000)))
    wait_for("state Failed", lambda: status(k).get("state") == "Failed")
    assert status(k)["message"].startswith("GeneralError: xxx") and len(status(k)["message"]) <= 1024


def test_event_flood_does_not_flood_status_writes(operator, k, namespace):
    k.apply(LOCAL_SAMPLE)
    k("wait", "--for=condition=Ready", "aimodel/ai-model-sample", "--timeout=60s")
    before = operator.api_writes()
    events = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [worker_event(namespace, "ai-model-sample", "GeneralError", f"flood {i}") for i in range(100)],
    }
    k("create", "-f", "-", input=json.dumps(events))
    wait_for("the newest report", lambda: status(k).get("message") == "GeneralError: flood 99", timeout=30)
    writes = operator.api_writes() - before
    # One status write per report would be 100; coalescing keeps it to a handful (+1 Event each).
    assert writes < 30, writes


def test_drift_is_repaired(operator, k):
    k.apply(REMOTE_SAMPLE)
    deployment = wait_for("the Deployment", lambda: k.get("deployment", "ai-model-sample-deployment"))
    k("scale", "deployment", "ai-model-sample-deployment", "--replicas=1")
    wait_for(
        "replicas restored to 3",
        lambda: k.get("deployment", "ai-model-sample-deployment")["spec"]["replicas"] == 3,
    )
    k("set", "env", "deployment/ai-model-sample-deployment", "MODEL_NAME=hacked")
    wait_for(
        "env restored",
        lambda: env_of(k.get("deployment", "ai-model-sample-deployment"))["MODEL_NAME"].get("value") == "gpt-3.5-turbo",
    )
    for kind, name in CHILDREN:
        uid = k.get(kind, name)["metadata"]["uid"]
        k("delete", kind, name, "--wait=false")
        wait_for(
            f"{kind} recreated",
            lambda kind=kind, name=name, uid=uid: (o := k.get(kind, name)) and o["metadata"]["uid"] != uid,
        )
    assert deployment["metadata"]["uid"] != k.get("deployment", "ai-model-sample-deployment")["metadata"]["uid"]
    extra_rule = {
        "op": "add",
        "path": "/rules/-",
        "value": {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    }
    k("patch", "role", "ai-model-sample-worker-events", "--type=json", "-p", json.dumps([extra_rule]))
    wait_for("role rules restored", lambda: len(k.get("role", "ai-model-sample-worker-events")["rules"]) == 1)


def test_deleting_the_aimodel_collects_every_child(operator, k):
    k.apply(REMOTE_SAMPLE)
    for kind, name in CHILDREN:
        wait_for(f"{kind} {name}", lambda kind=kind, name=name: k.get(kind, name))
    k("delete", "aimodel", "ai-model-sample")
    for kind, name in CHILDREN:
        wait_for(f"{kind} {name} to be collected", lambda kind=kind, name=name: k.get(kind, name) is None, timeout=60)
    wait_for("worker pods gone", lambda: not k.json("get", "pods")["items"], timeout=60)


def test_foreign_object_with_a_child_name_is_not_taken_over(operator, k):
    k("create", "serviceaccount", "ai-model-sample-worker")
    k("create", "deployment", "ai-model-sample-deployment", "--image=someone/else:1", "--replicas=1")
    k.apply(LOCAL_SAMPLE)
    cond = wait_for(
        "Ready=False ChildConflict",
        lambda: next((c for c in status(k).get("conditions", []) if c["reason"] == "ChildConflict"), None),
    )
    assert cond["type"] == "Ready" and cond["status"] == "False"
    assert "ServiceAccount ai-model-sample-worker already exists" in cond["message"]
    assert "ServiceAccount ai-model-sample-worker already exists" in status(k)["message"]
    # What depends on the taken ServiceAccount is not applied at all: no pod of the user's image
    # runs under someone else's identity, no RoleBinding grants it anything.
    assert k.get("rolebinding", "ai-model-sample-worker-events") is None
    dep = k.get("deployment", "ai-model-sample-deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "someone/else:1"
    assert not dep["metadata"].get("ownerReferences")
    # Not even merged into: server-side apply would have added labels and an ownerReference.
    sa = k.get("serviceaccount", "ai-model-sample-worker")
    assert not sa["metadata"].get("ownerReferences") and not sa["metadata"].get("labels")
    k("delete", "aimodel", "ai-model-sample")
    wait_for("the role to be collected", lambda: k.get("role", "ai-model-sample-worker-events") is None, timeout=60)
    assert k.get("deployment", "ai-model-sample-deployment") is not None
    assert k.get("serviceaccount", "ai-model-sample-worker") is not None


def test_no_writes_when_nothing_changes_also_across_restart(operator, k, kubectl, namespace):
    # Without pods: simulated pods may lose readiness when the machine is loaded, and that
    # change would rightly be written. What is measured here is the operator alone.
    k.apply(model({"replicas": 0}))
    k.apply(model({"replicas": 0}, name="remote", base=REMOTE_SAMPLE))
    k("create", "-f", "-", input=json.dumps(worker_event(namespace, "remote", "APIQuotaExceededError", "quota")))
    k("wait", "--for=condition=Ready", "aimodel/ai-model-sample", "--timeout=60s")
    wait_for("remote Failed", lambda: status(k, "remote").get("state") == "Failed")
    # Counters are published in batches: wait until both show the Deployment as observed.
    for name in ("ai-model-sample", "remote"):
        wait_for(
            f"{name} counters",
            lambda name=name: (
                (d := k.get("deployment", f"{name}-deployment"))
                and d.get("status", {}).get("observedGeneration") == 1
                and status(k, name).get("replicas") == 0
                and "conditions" in status(k, name)
            ),
        )
    # Nothing may change anywhere while writes are counted: earlier tests' namespaces must be gone.
    wait_for(
        "no namespace being deleted",
        lambda: all(ns["status"]["phase"] != "Terminating" for ns in kubectl.json("get", "namespaces")["items"]),
        timeout=180,
    )
    snapshot = {n: k.get("aimodel", n)["metadata"]["resourceVersion"] for n in ("ai-model-sample", "remote")}
    snapshot_deployments = {n: k.get("deployment", f"{n}-deployment")["status"] for n in snapshot}
    assert operator.api_writes() > 0
    operator.restart()
    wait_for("the restarted operator to reconcile both models", lambda: reconciled(operator) >= 2)
    # Measured over a quiet period: the restarted operator must not write anything.
    quiet_until = time.monotonic() + 5
    while time.monotonic() < quiet_until:
        assert operator.api_writes() == 0, (
            operator.log_tail(),
            snapshot_deployments,
            {n: k.get("deployment", f"{n}-deployment")["status"] for n in snapshot},
        )
        time.sleep(0.5)
    assert {n: k.get("aimodel", n)["metadata"]["resourceVersion"] for n in snapshot} == snapshot
    assert status(k, "remote")["state"] == "Failed"


def reconciled(operator) -> float:
    return operator.metrics().get('aimodel_operator_reconciles_total{result="ok"}', 0)


def test_restart_with_new_settings_updates_every_deployment(operator, k):
    k.apply(LOCAL_SAMPLE)
    k.apply(model(name="second"))
    for name in ("ai-model-sample", "second"):
        wait_for(f"{name} Deployment", lambda name=name: k.get("deployment", f"{name}-deployment"))
    operator.restart({"PULSAR_URL": "pulsar://pulsar.example:6650", "RES_TOPIC_NAME": "results"})
    for name in ("ai-model-sample", "second"):
        wait_for(
            f"{name} Deployment with the new settings",
            lambda name=name: (
                env_of(k.get("deployment", f"{name}-deployment"))["PULSAR_URL"].get("value")
                == "pulsar://pulsar.example:6650"
                and env_of(k.get("deployment", f"{name}-deployment"))["RES_TOPIC_NAME"].get("value") == "results"
            ),
        )


def test_errors_before_a_modification_do_not_fail_it_after_restart(operator, k, namespace):
    k.apply(LOCAL_SAMPLE)
    k("create", "-f", "-", input=json.dumps(worker_event(namespace, "ai-model-sample", "GeneralError", "old")))
    wait_for("state Failed", lambda: status(k).get("state") == "Failed")
    operator.stop()
    k("patch", "aimodel", "ai-model-sample", "--type=merge", "-p", '{"spec":{"image":"user/image:v2"}}')
    operator.start()
    wait_for("state Running after the modification", lambda: status(k).get("observedGeneration") == 2)
    assert status(k)["state"] == "Running"
    operator.restart()
    wait_for("the restarted operator to reconcile", lambda: reconciled(operator) >= 1)
    # The old event is still stored; a fresh one is needed to fail the new spec.
    assert k.get(
        "event", k.json("get", "events", "--field-selector=reason=GeneralError")["items"][0]["metadata"]["name"]
    )
    assert status(k)["state"] == "Running"
    k("create", "-f", "-", input=json.dumps(worker_event(namespace, "ai-model-sample", "GeneralError", "new")))
    wait_for("state Failed again", lambda: status(k).get("message") == "GeneralError: new")


def test_samples_apply_and_delete_with_kustomize(operator, k):
    from kube_helpers import REPO

    k("apply", "-k", str(REPO / "config" / "samples"))
    names = (
        "ai-model-sample",
        "ai-model-remote-sample",
        "ai-model-keda-sample",
        "ai-model-secretref-sample",
        "ai-model-gpu-sample",
        "ai-model-local-server-sample",
    )
    for name in names:
        wait_for(f"{name} to have a state", lambda name=name: status(k, name).get("state") == "Running")
    # The KEDA sample without KEDA (not installed yet in this session, or no admin URL) still runs its workers.
    assert k.get("deployment", "ai-model-keda-sample-deployment")["spec"]["replicas"] == 1
    wait_for(
        "the operator's Reconciled event",
        lambda: (
            "Reconciled"
            in {
                e["reason"]
                for e in k.json("get", "events", "--field-selector=involvedObject.name=ai-model-sample")["items"]
            }
        ),
    )
    k("delete", "-k", str(REPO / "config" / "samples"))
    for name in names:
        wait_for(
            f"{name} Deployment collected",
            lambda name=name: k.get("deployment", f"{name}-deployment") is None,
            timeout=60,
        )
