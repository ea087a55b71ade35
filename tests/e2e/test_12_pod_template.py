"""spec.template on the real control plane: the scheduler places GPU workers on the GPU pool (kwok
nodes with nvidia.com/gpu), Pod Security admission judges the workers' pods, the CRD's typed
schema and rules refuse what breaks the worker's contract, and a template change rolls once."""

from __future__ import annotations

import json
import re
import time

import pytest

from kube_helpers import wait_for

GPU_LABEL = "nvidia.com/gpu.present"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def aimodel(name: str = "t", replicas: int = 1, template: dict | None = None) -> dict:
    spec: dict = {"type": "local", "model": "TinyLlama-1.1B", "image": "user/image:tag", "replicas": replicas}
    if template is not None:
        spec["template"] = template
    return {"apiVersion": "model.youxam.com/v1alpha1", "kind": "AIModel", "metadata": {"name": name}, "spec": spec}


def gpu_template(gpus: int) -> dict:
    return {
        "spec": {
            "nodeSelector": {GPU_LABEL: "true"},
            "tolerations": [GPU_TOLERATION],
            "containers": [
                {
                    "name": "worker",
                    "resources": {
                        "limits": {"nvidia.com/gpu": gpus, "memory": "4Gi"},
                        "requests": {"cpu": "1000m", "memory": "4Gi"},
                    },
                }
            ],
        }
    }


def condition(k, name: str, type_: str) -> dict:
    model = k.get("aimodel", name) or {}
    return next((c for c in (model.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def pods(k, name: str) -> list[dict]:
    return k.json("get", "pods", "-l", f"model.youxam.com/aimodel={name}")["items"]


def reconciles(op) -> float:
    return sum(v for key, v in op.metrics().items() if key.startswith("aimodel_operator_reconciles_total{"))


def nudge(k, op, name: str, n: int) -> None:
    """Change the AIModel's metadata (not its spec) and wait for the full reconcile that causes."""
    before = reconciles(op)
    k("annotate", "aimodel", name, f"test/nudge={n}", "--overwrite")
    wait_for("the reconcile the nudge causes", lambda: reconciles(op) > before, timeout=10)


def test_gpu_workers_land_only_on_the_gpu_pool(operator, k, kubectl):
    gpu_nodes = {n["metadata"]["name"] for n in kubectl.json("get", "nodes", "-l", f"{GPU_LABEL}=true")["items"]}
    assert len(gpu_nodes) == 2, gpu_nodes
    k.apply(aimodel("gpu", replicas=3, template=gpu_template(1)))
    placed = wait_for(
        "3 GPU workers scheduled",
        lambda: len(ps := [p for p in pods(k, "gpu") if p["spec"].get("nodeName")]) == 3 and ps,
        timeout=60,
    )
    assert {p["spec"]["nodeName"] for p in placed} <= gpu_nodes
    worker = next(c for c in placed[0]["spec"]["containers"] if c["name"] == "worker")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    wait_for("the model Ready", lambda: condition(k, "gpu", "Ready").get("status") == "True", timeout=60)
    # What the workers ask for is part of what `kubectl describe` shows.
    described = k("describe", "aimodel", "gpu")
    assert re.search(r"nvidia\.com/gpu:\s+1\n", described), described
    assert re.search(r"node\s*selector:", described, re.IGNORECASE), described


def test_more_gpus_than_a_node_has_leave_the_workers_pending_with_the_schedulers_message(operator, k):
    k.apply(aimodel("greedy", replicas=3, template=gpu_template(5)))
    cond = wait_for(
        "WorkersAvailable Unschedulable",
        lambda: (c := condition(k, "greedy", "WorkersAvailable")).get("reason") == "Unschedulable" and c,
        timeout=60,
    )
    assert cond["message"].startswith("3/3 workers Unschedulable (0/4 nodes are available: ")
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    assert all(not p["spec"].get("nodeName") for p in pods(k, "greedy"))


@pytest.fixture
def restricted(k, namespace, kubectl):
    """The test's namespace, enforcing the restricted Pod Security level."""
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    return k


def test_the_default_worker_pod_is_admitted_under_restricted(operator, restricted):
    k = restricted
    k.apply(aimodel("plain", replicas=2))
    wait_for("2 workers running", lambda: sum(p["status"].get("phase") == "Running" for p in pods(k, "plain")) == 2)
    wait_for("the model Ready", lambda: condition(k, "plain", "Ready").get("status") == "True", timeout=60)


def test_a_privileged_template_is_refused_by_pod_security_and_the_status_says_so(operator, restricted):
    k = restricted
    template = {"spec": {"containers": [{"name": "worker", "securityContext": {"privileged": True}}]}}
    # (The restricted default's allowPrivilegeEscalation: false is left out for a privileged worker.)
    k.apply(aimodel("priv", template=template))
    cond = wait_for(
        "WorkersAvailable FailedCreate",
        lambda: (c := condition(k, "priv", "WorkersAvailable")).get("reason") == "FailedCreate" and c,
        timeout=60,
    )
    assert 'violates PodSecurity "restricted:latest"' in cond["message"]
    assert "privileged" in cond["message"]
    assert pods(k, "priv") == []


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            {"spec": {"containers": [{"name": "worker", "env": [{"name": "API_KEY", "value": "x"}]}]}},
            "spec.template.spec.containers[worker].env: API_KEY is set by the operator and may not be overridden",
        ),
        (
            {"spec": {"containers": [{"name": "worker", "env": [{"name": "PULSAR_URL", "value": "x"}]}]}},
            "spec.template.spec.containers[worker].env: PULSAR_URL is set by the operator",
        ),
        ({"spec": {"serviceAccountName": "root"}}, "spec.template.spec.serviceAccountName may not be set"),
        (
            {"spec": {"automountServiceAccountToken": False}},
            "spec.template.spec.automountServiceAccountToken may not be false",
        ),
        (
            {"spec": {"initContainers": [{"name": "worker", "image": "x"}]}},
            "spec.template.spec.initContainers: the name worker is the worker container's",
        ),
        (
            {"spec": {"containers": [{"name": "worker", "image": "x"}]}},
            "spec.template.spec.containers[worker].image may not be set",
        ),
        (
            {"metadata": {"labels": {"model.youxam.com/aimodel": "other"}}},
            "spec.template.metadata.labels: model.youxam.com/aimodel",
        ),
    ],
)
def test_a_template_that_breaks_the_contract_is_refused_naming_the_field(crds_installed, k, template, message):
    res = k.run("apply", "-f", "-", input=json.dumps(aimodel("bad", template=template)), check=False)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr


def test_a_typo_in_the_template_is_refused(crds_installed, k):
    template = {"spec": {"containers": [{"name": "worker", "resource": {"limits": {"cpu": "1"}}}]}}
    res = k.run("apply", "-f", "-", input=json.dumps(aimodel("typo", template=template)), check=False)
    assert res.returncode != 0
    assert 'unknown field "spec.template.spec.containers[0].resource"' in res.stderr, res.stderr


def test_kubectl_explain_answers_for_a_nested_template_field(crds_installed, kubectl):
    out = kubectl("explain", "aimodel.spec.template.spec.containers.resources")
    assert "limits" in out and "requests" in out


def test_a_template_change_rolls_once_and_an_equal_one_writes_nothing(recorded_operator, k, namespace):
    op, proxy = recorded_operator()
    template = {
        "spec": {
            "containers": [
                {
                    "name": "worker",
                    # Written back by the API server in canonical form ("1", "512Mi", protocol TCP).
                    "resources": {"requests": {"cpu": "1000m", "memory": "0.5Gi"}},
                    "ports": [{"containerPort": 9000, "name": "metrics"}],
                }
            ]
        }
    }
    k.apply(aimodel("roll", replicas=2, template=template))
    wait_for("the model Ready", lambda: condition(k, "roll", "Ready").get("status") == "True", timeout=60)
    deployment = "roll-deployment"
    wait_for("one ReplicaSet", lambda: len(k.json("get", "rs", "-l", "model.youxam.com/aimodel=roll")["items"]) == 1)
    live = k.get("deployment", deployment)
    worker = live["spec"]["template"]["spec"]["containers"][0]
    assert worker["resources"]["requests"] == {"cpu": "1", "memory": "512Mi"}

    # Converged: a reconcile with nothing to do writes nothing, though the live quantities differ in form.
    start = time.monotonic()
    for n in range(3):
        nudge(k, op, "roll", n)
    ours = f"/namespaces/{namespace}/"
    assert [f"{r.method} {r.path}" for r in proxy.writes(start) if ours in r.path] == []

    generation = live["metadata"]["generation"]
    template["spec"]["nodeSelector"] = {"kubernetes.io/os": "linux"}
    k.apply(aimodel("roll", replicas=2, template=template))
    wait_for(
        "the Deployment's new generation",
        lambda: k.get("deployment", deployment)["metadata"]["generation"] == generation + 1,
    )
    wait_for("the model Ready again", lambda: condition(k, "roll", "Ready").get("status") == "True", timeout=60)
    wait_for("two ReplicaSets", lambda: len(k.json("get", "rs", "-l", "model.youxam.com/aimodel=roll")["items"]) == 2)
    assert k.get("deployment", deployment)["metadata"]["generation"] == generation + 1, "rolled exactly once"
    assert op.proc is not None and op.proc.poll() is None


SIDECAR_POLICY = {
    "apiVersion": "admissionregistration.k8s.io/v1beta1",
    "kind": "MutatingAdmissionPolicy",
    "metadata": {"name": "inject-sidecar"},
    "spec": {
        "failurePolicy": "Fail",
        "reinvocationPolicy": "Never",
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
        "matchConditions": [
            {
                "name": "workers",
                "expression": "has(object.metadata.labels) && "
                "'app.kubernetes.io/managed-by' in object.metadata.labels && "
                "object.metadata.labels['app.kubernetes.io/managed-by'] == 'aimodel-operator'",
            }
        ],
        "mutations": [
            {
                "patchType": "ApplyConfiguration",
                "applyConfiguration": {
                    "expression": "Object{spec: Object.spec{template: Object.spec.template{spec: "
                    "Object.spec.template.spec{containers: [Object.spec.template.spec.containers{"
                    "name: 'mesh-proxy', image: 'mesh/proxy:1'}]}}}}"
                },
            }
        ],
    },
}


@pytest.fixture
def sidecar_injector(kubectl, namespace):
    """A MutatingAdmissionPolicy that adds a sidecar to the workers' Deployments in the test's
    namespace, as a service mesh's injector does."""
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1beta1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": f"inject-sidecar-{namespace}"},
        "spec": {
            "policyName": "inject-sidecar",
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        },
    }
    kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [SIDECAR_POLICY, binding]}),
    )
    probe = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe", "labels": {"app.kubernetes.io/managed-by": "aimodel-operator"}},
        "spec": {
            "selector": {"matchLabels": {"app": "probe"}},
            "template": {
                "metadata": {"labels": {"app": "probe"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }

    def injecting() -> bool:
        made = kubectl.in_namespace(namespace).json("create", "--dry-run=server", "-f", "-", input=json.dumps(probe))
        return [c["name"] for c in made["spec"]["template"]["spec"]["containers"]] == ["c", "mesh-proxy"]

    # A new policy takes effect once the API server has compiled it (typically within a second).
    wait_for("the injector in force", injecting, timeout=30)
    try:
        yield
    finally:
        kubectl("delete", "mutatingadmissionpolicybinding", binding["metadata"]["name"], "--ignore-not-found")


def test_a_sidecar_injector_and_the_operator_do_not_fight(recorded_operator, sidecar_injector, k, namespace):
    op, proxy = recorded_operator()
    k.apply(aimodel("meshed", replicas=1))
    deployment = "meshed-deployment"
    wait_for(
        "the injected sidecar",
        lambda: (
            [
                c["name"]
                for c in ((k.get("deployment", deployment) or {}).get("spec") or {})
                .get("template", {})
                .get("spec", {})
                .get("containers", [])
            ]
            == ["worker", "mesh-proxy"]
        ),
        timeout=30,
    )
    wait_for("the model Ready", lambda: condition(k, "meshed", "Ready").get("status") == "True", timeout=60)
    version = k.get("deployment", deployment)["metadata"]["resourceVersion"]
    start = time.monotonic()
    ours = f"/namespaces/{namespace}/"
    # 60 s with the sidecar in place, the operator woken every few seconds: it never writes.
    n = 0
    while time.monotonic() - start < 60:
        nudge(k, op, "meshed", n)
        assert [f"{r.method} {r.path}" for r in proxy.writes(start) if ours in r.path] == []
        n += 1
        time.sleep(3)
    print(f"\nsidecar injected: {n} reconciles in {time.monotonic() - start:.0f}s, 0 operator writes")
    assert k.get("deployment", deployment)["metadata"]["resourceVersion"] == version
    assert op.proc is not None and op.proc.poll() is None


def test_the_crd_with_the_typed_template_applies_with_plain_kubectl_apply(crds_installed, kubectl):
    """Client-side apply keeps the whole CRD in an annotation (at most 256 KiB): it still fits."""
    from kube_helpers import REPO

    out = kubectl("apply", "--dry-run=server", "-f", str(REPO / "config" / "crd" / "bases"))
    assert "aimodels.model.youxam.com" in out


def test_the_template_schema_is_the_pinned_kubernetes_pod_template(kubectl):
    """schemas/podtemplate.json is what hack/podtemplate_schema.py makes of this API server's OpenAPI
    (`make podtemplate-schema`): the pinned version's, not a hand-edited copy."""
    import podtemplate_schema

    openapi = json.loads(kubectl("get", "--raw", "/openapi/v3/api/v1"))
    committed = json.loads(podtemplate_schema.OUT.read_text())
    assert podtemplate_schema.pod_template(openapi) == committed, "stale: run `make podtemplate-schema manifests`"
