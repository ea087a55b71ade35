"""KEDA autoscaling with the real KEDA operator (HPA creation, conditions; no metrics adapter)."""

from __future__ import annotations

import json

import pytest

from kube_helpers import wait_for

# Nothing listens here: KEDA's Pulsar scaler gets "connection refused" from a loopback port,
# which leaves the ScaledObject Ready (its spec is valid) and Active Unknown, as in the seed.
ADMIN_URL = "http://127.0.0.1:9"

KEDA_SAMPLE = {
    "apiVersion": "model.youxam.com/v1alpha1",
    "kind": "AIModel",
    "metadata": {"name": "ai-model-sample"},
    "spec": {
        "type": "local",
        "model": "TinyLlama-1.1B",
        "msgBacklogThreshold": 2,
        "image": "user/image:tag",
        "maxProcessNum": 256,
    },
}


def condition(k, type_, name="ai-model-sample"):
    obj = k.get("aimodel", name) or {}
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def scaled_object_ready(k, name="ai-model-sample-scaledobject"):
    obj = k.get("scaledobject", name)
    conds = {c["type"]: c["status"] for c in ((obj or {}).get("status") or {}).get("conditions", [])}
    return conds.get("Ready") == "True"


@pytest.fixture
def keda_operator(operator_process, keda):
    """The operator with a Pulsar admin URL, on a cluster running KEDA."""
    if operator_process.proc is None or operator_process.env != {"PULSAR_ADMIN_URL": ADMIN_URL}:
        operator_process.stop()
        operator_process.start({"PULSAR_ADMIN_URL": ADMIN_URL})
    return operator_process


def test_without_keda_the_model_runs_and_says_why_then_recovers(operator_process, cluster, kubectl, k):
    _, local = cluster
    if local is None:
        pytest.skip("needs the local cluster: KEDA is uninstalled and installed again")
    # A cluster without KEDA: no KEDA process, no keda.sh CRDs.
    local.uninstall_keda()
    assert kubectl.run("get", "crd", "scaledobjects.keda.sh", check=False).returncode != 0
    operator_process.stop()
    operator_process.start({"PULSAR_ADMIN_URL": ADMIN_URL})
    k.apply(KEDA_SAMPLE)
    cond = wait_for(
        "Autoscaling=False KEDANotInstalled",
        lambda: (c := condition(k, "Autoscaling")) and c["reason"] == "KEDANotInstalled" and c,
    )
    assert cond["status"] == "False" and "KEDA is not installed" in cond["message"]
    deployment = wait_for("the Deployment", lambda: k.get("deployment", "ai-model-sample-deployment"))
    assert deployment["spec"]["replicas"] == 1
    k("wait", "--for=condition=Ready", "aimodel/ai-model-sample", "--timeout=60s")
    wait_for(
        "an Event saying KEDA is missing",
        lambda: (
            "AutoscalingKEDANotInstalled"
            in {
                e["reason"]
                for e in k.json("get", "events", "--field-selector=involvedObject.name=ai-model-sample")["items"]
            }
        ),
    )

    # Installing KEDA is noticed without touching the operator or the AIModel.
    local.start_keda()
    wait_for("the ScaledObject", lambda: k.get("scaledobject", "ai-model-sample-scaledobject"), timeout=60)
    wait_for("Autoscaling=True", lambda: (condition(k, "Autoscaling") or {}).get("status") == "True", timeout=60)


def test_seed_keda_sample_creates_scaledobject_and_hpa(keda_operator, k):
    k.apply(KEDA_SAMPLE)
    wait_for("ScaledObject Ready", lambda: scaled_object_ready(k), timeout=60)
    row = k("get", "scaledobject").splitlines()
    header, values = row[0].split(), row[1].split()
    got = dict(zip(header, values, strict=False))
    assert got["NAME"] == "ai-model-sample-scaledobject"
    assert got["SCALETARGETKIND"] == "apps/v1.Deployment"
    assert got["SCALETARGETNAME"] == "ai-model-sample-deployment"
    assert got["READY"] == "True"
    so = k.get("scaledobject", "ai-model-sample-scaledobject")
    assert so["spec"]["minReplicaCount"] == 1 and so["spec"]["maxReplicaCount"] == 100
    assert so["spec"]["triggers"] == [
        {
            "type": "pulsar",
            "metadata": {
                "adminURL": ADMIN_URL,
                "topic": "persistent://public/default/model-TinyLlama-1.1B",
                "subscription": "model-TinyLlama-1.1B-subscription",
                "msgBacklogThreshold": "2",
            },
        }
    ]
    assert so["metadata"]["ownerReferences"][0]["kind"] == "AIModel"
    hpa = wait_for("KEDA's HPA", lambda: k.get("hpa", "keda-hpa-ai-model-sample-scaledobject"), timeout=60)
    line = k("get", "hpa", "keda-hpa-ai-model-sample-scaledobject").splitlines()[1].split()
    assert line[1] == "Deployment/ai-model-sample-deployment"
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 100
    cond = wait_for(
        "Autoscaling condition from KEDA", lambda: (c := condition(k, "Autoscaling")) and c["status"] == "True" and c
    )
    assert cond["reason"] == "ScaledObjectReady"


def test_replicas_belong_to_keda_until_autoscaling_is_removed(keda_operator, k):
    k.apply({**KEDA_SAMPLE, "spec": {**KEDA_SAMPLE["spec"], "replicas": 3}})
    wait_for("ScaledObject Ready", lambda: scaled_object_ready(k), timeout=60)
    # Standing in for the HPA: the replica count is changed outside the operator.
    k("scale", "deployment", "ai-model-sample-deployment", "--replicas=4")
    k("patch", "aimodel", "ai-model-sample", "--type=merge", "-p", '{"spec":{"maxProcessNum":64}}')
    wait_for(
        "the spec change to reach the Deployment",
        lambda: any(
            e.get("value") == "64"
            for e in k.get("deployment", "ai-model-sample-deployment")["spec"]["template"]["spec"]["containers"][0][
                "env"
            ]
        ),
    )
    wait_for(
        "the reconcile to finish",
        lambda: (k.get("aimodel", "ai-model-sample").get("status") or {}).get("observedGeneration") == 2,
    )
    assert k.get("deployment", "ai-model-sample-deployment")["spec"]["replicas"] == 4

    # The ScaledObject is restored when deleted or edited.
    k("patch", "scaledobject", "ai-model-sample-scaledobject", "--type=merge", "-p", '{"spec":{"maxReplicaCount":7}}')
    wait_for(
        "maxReplicaCount restored",
        lambda: k.get("scaledobject", "ai-model-sample-scaledobject")["spec"]["maxReplicaCount"] == 100,
    )
    uid = k.get("scaledobject", "ai-model-sample-scaledobject")["metadata"]["uid"]
    k("delete", "scaledobject", "ai-model-sample-scaledobject", "--wait=false")
    wait_for(
        "ScaledObject recreated",
        lambda: (o := k.get("scaledobject", "ai-model-sample-scaledobject")) and o["metadata"]["uid"] != uid,
        timeout=30,
    )

    k(
        "patch",
        "aimodel",
        "ai-model-sample",
        "--type=json",
        "-p",
        json.dumps([{"op": "remove", "path": "/spec/msgBacklogThreshold"}]),
    )
    wait_for(
        "the ScaledObject deleted", lambda: k.get("scaledobject", "ai-model-sample-scaledobject") is None, timeout=30
    )
    wait_for("KEDA's HPA deleted", lambda: k.get("hpa", "keda-hpa-ai-model-sample-scaledobject") is None, timeout=60)
    wait_for(
        "replicas back to spec.replicas",
        lambda: k.get("deployment", "ai-model-sample-deployment")["spec"]["replicas"] == 3,
    )
    assert condition(k, "Autoscaling") is None


def test_pulsar_token_goes_through_trigger_authentication(operator_process, keda, k):
    operator_process.stop()
    operator_process.start({"PULSAR_ADMIN_URL": ADMIN_URL, "PULSAR_TOKEN": "pulsar-secret-token"})
    k.apply(KEDA_SAMPLE)
    wait_for("ScaledObject Ready", lambda: scaled_object_ready(k), timeout=60)
    so = k.get("scaledobject", "ai-model-sample-scaledobject")
    assert "pulsar-secret-token" not in json.dumps(so)
    trigger = so["spec"]["triggers"][0]
    assert trigger["authenticationRef"] == {"name": "ai-model-sample-pulsar-auth"}
    assert trigger["metadata"]["authModes"] == "bearer"
    auth = k.get("triggerauthentication", "ai-model-sample-pulsar-auth")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "bearerToken", "name": "ai-model-sample-worker-secrets", "key": "PULSAR_TOKEN"}
    ]
    assert "pulsar-secret-token" not in json.dumps(k.get("deployment", "ai-model-sample-deployment"))


def test_empty_pulsar_admin_url_is_reported(operator, keda, k):
    k.apply(KEDA_SAMPLE)
    cond = wait_for(
        "Autoscaling=False PulsarAdminURLNotSet",
        lambda: (c := condition(k, "Autoscaling")) and c["reason"] == "PulsarAdminURLNotSet" and c,
    )
    assert "PULSAR_ADMIN_URL" in cond["message"]
    assert k.get("scaledobject", "ai-model-sample-scaledobject") is None
    assert k.get("deployment", "ai-model-sample-deployment")["spec"]["replicas"] == 1
