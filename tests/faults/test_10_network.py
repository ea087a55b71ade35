"""Faults between the operator and the API server, injected by a proxy on loopback.

Models are created, changed and deleted (straight at the API server) while
the operator's connection fails; every case ends with the suite's
invariants (fault_invariants.py).
"""

from __future__ import annotations

import json
import time

from fault_invariants import (
    LOCAL,
    REMOTE,
    assert_alive,
    assert_converged,
    assert_writes_flat,
    condition,
    model_manifest,
    status,
    worker_event,
)

from kube_helpers import wait_for


def _start(k, models):
    for name, spec in models.items():
        k.apply(model_manifest(name, spec))
    assert_converged(k, models)


def _change_during_fault(k, models):
    """Create one, change one, delete one; return the models that should exist."""
    models = dict(models)
    models["new"] = dict(LOCAL, model="added-during-fault")
    k.apply(model_manifest("new", models["new"]))
    models["a"] = dict(models["a"], image="user/image:v2")
    k.apply(model_manifest("a", models["a"]))
    k("delete", "aimodel", "b", "--wait=false")
    del models["b"]
    return models


def _model_gauge(operator) -> float:
    return operator.metrics().get("aimodel_operator_aimodels", -1)


def test_a_storm_of_503s(proxied_operator, proxy, k):
    models = {"a": LOCAL, "b": REMOTE, "c": REMOTE}
    _start(k, models)
    proxy.fail_all(503, seconds=90)
    models = _change_during_fault(k, models)
    wait_for(
        "the operator to meet the storm",
        lambda: sum(1 for r in proxy.requests(time.monotonic() - 5) if r.status == 503) > 5,
    )
    assert_alive(proxied_operator)
    assert_converged(k, models, timeout=150)
    assert_alive(proxied_operator)
    assert_writes_flat(proxied_operator)


def test_a_model_deleted_while_no_watch_runs_is_forgotten(proxied_operator, proxy, k, namespace):
    """A relist drops what vanished meanwhile: no ghost re-applies the children of a deleted model."""
    models = {"a": LOCAL, "b": REMOTE, "c": LOCAL}
    _start(k, models)
    assert _model_gauge(proxied_operator) >= 3
    proxy.fail_all(503)
    k("delete", "aimodel", "b")
    wait_for("b's children collected", lambda: k.get("deployment", "b-deployment") is None, timeout=60)
    healed = time.monotonic()
    proxy.heal()
    del models["b"]
    assert_converged(k, models, timeout=60)
    assert_writes_flat(proxied_operator)
    mine = [r for r in proxy.writes(healed) if f"/namespaces/{namespace}/" in r.path]
    written_for_b = [r for r in mine if "/b-" in r.path or "/aimodels/b" in r.path]
    assert written_for_b == [], written_for_b
    for kind, name in (("deployment", "b-deployment"), ("secret", "b-worker-secrets"), ("role", "b-worker-events")):
        assert k.get(kind, name) is None, f"{kind} {name} came back"


def test_watch_errors_and_expired_history(proxied_operator, proxy, k):
    models = {"a": LOCAL, "b": REMOTE}
    _start(k, models)
    proxy.inject_watch_error(500)
    models = _change_during_fault(k, models)
    proxy.expire_watches(seconds=3)
    models["c"] = REMOTE
    k.apply(model_manifest("c", REMOTE))
    assert_converged(k, models)
    proxy.inject_watch_error(410)
    k("delete", "aimodel", "c")
    del models["c"]
    assert_converged(k, models)
    assert_alive(proxied_operator)
    assert_writes_flat(proxied_operator)


def test_half_open_watches_are_noticed(proxied_operator, proxy, k):
    """Watches that stay connected but bring nothing are dropped after the idle timeout (5 s here)."""
    models = {"a": LOCAL, "b": REMOTE}
    _start(k, models)
    proxy.half_open()
    models = _change_during_fault(k, models)
    assert_converged(k, models, timeout=30)
    assert_alive(proxied_operator)
    assert_writes_flat(proxied_operator)


def test_connections_cut_again_and_again(proxied_operator, proxy, k):
    models = {"a": LOCAL, "b": REMOTE}
    _start(k, models)
    for n in range(5):
        proxy.cut()
        k.apply(model_manifest(f"cut-{n}", LOCAL))
        models[f"cut-{n}"] = LOCAL
    models = _change_during_fault(k, models)
    proxy.cut()
    assert_converged(k, models, timeout=60)
    assert_alive(proxied_operator)
    assert_writes_flat(proxied_operator)


def test_a_stale_status_answer_never_hides_a_newer_spec(proxied_operator, proxy, k, namespace):
    """The answer to a status write that arrives after the watch brought a newer spec must not replace it."""
    models = {"a": LOCAL}
    _start(k, models)
    proxy.delay_responses("PATCH", "/aimodels/a/status", 3)
    k.apply(worker_event(namespace, "a.report", "a", "boom"))
    wait_for("the Failed status written", lambda: status(k, "a").get("state") == "Failed")
    # The operator has not heard back yet: the spec changes meanwhile.
    models["a"] = dict(LOCAL, image="user/image:v2")
    k.apply(model_manifest("a", models["a"]))
    wait_for(
        "the new image applied",
        lambda: (
            k.get("deployment", "a-deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == "user/image:v2"
        ),
        timeout=15,
    )
    wait_for("Running again after the spec change", lambda: status(k, "a").get("state") == "Running")
    assert_converged(k, models)
    assert_writes_flat(proxied_operator)


def test_one_failed_keda_list_does_not_scale_models_down(keda, proxied_operator, proxy, k, namespace):
    """A 404 on the ScaledObject list is no proof that KEDA is gone: replicas stay with KEDA."""
    proxied_operator.stop()
    proxied_operator.start(env={"PULSAR_ADMIN_URL": "http://127.0.0.1:1/admin"}, extra_args=("--watch-idle-timeout=5",))
    spec = dict(LOCAL, replicas=1, msgBacklogThreshold=2, minReplicas=0)
    k.apply(model_manifest("a", spec))
    wait_for("the ScaledObject", lambda: k.get("scaledobject", "a-scaledobject"))
    wait_for("the Deployment", lambda: k.get("deployment", "a-deployment"))
    # What KEDA's HPA would do: the operator no longer declares spec.replicas.
    k("scale", "deployment", "a-deployment", "--replicas=3")
    assert_writes_flat(proxied_operator)
    blip = time.monotonic()
    proxy.fail_matching("GET", "/scaledobjects?", 404, count=3)
    proxy.inject_watch_error(410)
    wait_for(
        "the ScaledObject list refused",
        lambda: any(r.status == 404 and "/scaledobjects?" in r.path for r in proxy.requests(blip)),
    )
    # Held for a while: no write may follow from the blip.
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert k.get("deployment", "a-deployment")["spec"]["replicas"] == 3
        assert condition(k, "a", "Autoscaling").get("reason") != "KEDANotInstalled"
        time.sleep(0.5)
    deployment_writes = [r for r in proxy.writes(blip) if f"/namespaces/{namespace}/deployments/" in r.path]
    assert deployment_writes == [], deployment_writes
    assert_writes_flat(proxied_operator)


def test_a_refused_child_makes_ready_false_until_applied(operator, k, kubectl, namespace):
    """When admission refuses the new Deployment, Ready is False with the API server's message."""
    policy = f"deny-forbidden-images-{namespace}"
    kubectl.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "object.spec.template.spec.containers.all(c, !c.image.startsWith('forbidden/'))",
                        "message": "images from forbidden/ are not allowed here",
                    }
                ],
            },
        }
    )
    kubectl.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
            },
        }
    )
    try:
        models = {"a": LOCAL}
        _start(k, models)
        # The policy is enforced once the API server has loaded it.
        wait_for(
            "the policy in force",
            lambda: (
                "forbidden/"
                in k.run(
                    "create", "deployment", "probe", "--image=forbidden/x:1", "--dry-run=server", check=False
                ).stderr
            ),
        )
        k.apply(model_manifest("a", dict(LOCAL, image="forbidden/x:1")))
        ready = wait_for(
            "Ready=False ApplyFailed",
            lambda: condition(k, "a", "Ready").get("reason") == "ApplyFailed" and condition(k, "a", "Ready"),
        )
        assert ready["status"] == "False"
        assert "images from forbidden/ are not allowed here" in ready["message"]
        assert status(k, "a")["observedGeneration"] == 2
        res = k.run("wait", "--for=condition=Ready", "aimodel/a", "--timeout=2s", check=False)
        assert res.returncode != 0
        image = k.get("deployment", "a-deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "user/image:tag"
    finally:
        kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy, "--ignore-not-found")
    models["a"] = dict(LOCAL, image="forbidden/x:1")
    assert_converged(k, models, timeout=60)
    k("wait", "--for=condition=Ready", "aimodel/a", "--timeout=5s")


def test_reports_from_pods_of_a_replaced_replica_set_are_ignored(operator, k, namespace):
    k.apply(model_manifest("a", dict(LOCAL, replicas=1)))
    old_pod = wait_for(
        "a worker pod",
        lambda: next(iter(k.json("get", "pods", "-l", "model.youxam.com/aimodel=a")["items"]), None),
        timeout=60,
    )["metadata"]["name"]
    k.apply(model_manifest("a", dict(LOCAL, replicas=1, image="user/image:v2")))
    wait_for(
        "a second ReplicaSet",
        lambda: len(k.json("get", "replicasets", "-l", "model.youxam.com/aimodel=a")["items"]) == 2,
        timeout=30,
    )
    wait_for("Running on generation 2", lambda: status(k, "a").get("observedGeneration") == 2)

    def report(name, pod=None, reason="AuthenticationError"):
        event = worker_event(namespace, name, "a", f"from {pod or 'no pod'}", reason)
        if pod:
            event["related"] = {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": namespace}
        k("create", "-f", "-", input=json.dumps(event))

    report("a.old", old_pod)
    # Held: the old worker's report must not fail the new spec.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert status(k, "a").get("state") == "Running", status(k, "a")
        time.sleep(0.25)
    report("a.unnamed", reason="GeneralError")
    st = wait_for(
        "Failed by a report without a pod", lambda: status(k, "a").get("state") == "Failed" and status(k, "a")
    )
    assert st["message"] == "GeneralError: from no pod"
