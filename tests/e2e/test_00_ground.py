"""The control plane the operator is tested on is real: scheduling, GC, tokens, RBAC, CEL."""

from __future__ import annotations

import json

from kube_helpers import established, wait_for


def running_pods(k, selector: str) -> int:
    pods = k.json("get", "pods", "-l", selector)["items"]
    return sum(1 for p in pods if p["status"].get("phase") == "Running" and p["spec"].get("nodeName"))


def test_deployment_pods_run_on_fake_nodes(k):
    k("create", "deployment", "web", "--image=example.invalid/web:1", "--replicas=3")
    wait_for("3 Running pods", lambda: running_pods(k, "app=web") == 3, timeout=60)
    nodes = {p["spec"]["nodeName"] for p in k.json("get", "pods", "-l", "app=web")["items"]}
    assert nodes <= {"kwok-node-0", "kwok-node-1"}


def test_garbage_collector_deletes_dependents(k):
    owner = json.loads(k("create", "configmap", "owner", "-o", "json"))
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
            ],
        },
    }
    k.apply(dependent)
    assert k.get("configmap", "dependent") is not None
    k("delete", "configmap", "owner")
    wait_for("the dependent to be garbage-collected", lambda: k.get("configmap", "dependent") is None, timeout=60)


def test_service_account_token_is_authenticated_and_authorized_by_rbac(k, namespace):
    k("create", "serviceaccount", "reporter")
    token = k.create_token("reporter")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "probe.1"},
        "involvedObject": {"kind": "Pod", "name": "x", "namespace": namespace},
        "reason": "Probe",
        "message": "hello",
        "type": "Normal",
    }
    whoami = k.run("auth", "whoami", "-o", "json", token=token)
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reporter"
    denied = k.run("create", "-f", "-", input=json.dumps(event), token=token, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    k("create", "role", "events", "--verb=create", "--resource=events")
    k("create", "rolebinding", "events", "--role=events", f"--serviceaccount={namespace}:reporter")
    wait_for(
        "RBAC to allow the token to create events",
        lambda: k.run("create", "-f", "-", input=json.dumps(event), token=token, check=False).returncode == 0,
        timeout=30,
    )
    assert k.get("event", "probe.1")["message"] == "hello"


def test_crd_cel_rule_refuses_invalid_object(kubectl, k):
    group = f"t{k.namespace.replace('-', '')}.example.com"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                                    "x-kubernetes-validations": [
                                        {"rule": "self.min <= self.max", "message": "spec.min must not exceed spec.max"}
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    kubectl.apply(crd)
    try:
        established(kubectl, f"widgets.{group}")
        bad = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"min": 5, "max": 1}}
        res = wait_for(
            "the API server to serve the new kind",
            lambda: (
                (r := k.run("apply", "-f", "-", input=json.dumps(bad), check=False)).returncode != 0
                and "spec.min must not exceed spec.max" in r.stderr
                and r
            ),
            timeout=30,
        )
        assert "spec.min must not exceed spec.max" in res.stderr
        good = {**bad, "spec": {"min": 1, "max": 5}}
        k.apply(good)
        assert k.get(f"widgets.{group}", "w")["spec"] == {"min": 1, "max": 5}
    finally:
        kubectl("delete", "crd", f"widgets.{group}", "--wait=false")
