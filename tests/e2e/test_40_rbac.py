"""The operator runs with nothing but the RBAC of config/default, and that RBAC is not cluster-admin."""

from __future__ import annotations

import json
import time

import pytest

from kube_helpers import REPO, OperatorProcess, wait_for

SYSTEM_NS = "aimodel-operator-system"
SA = "aimodel-operator-controller-manager"
ADMIN_URL = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def deployed_rbac(kubectl, crds_installed):
    """config/default applied; removed afterwards except the CRD, which other tests share."""
    rendered = kubectl("kustomize", str(REPO / "config" / "default"))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=rendered)
    yield rendered
    kubectl("delete", "clusterrolebinding", "aimodel-operator-manager-rolebinding", "--ignore-not-found")
    kubectl("delete", "clusterrole", "aimodel-operator-manager-role", "--ignore-not-found")
    # Gone before the next test installs the operator there again.
    kubectl("delete", "namespace", SYSTEM_NS, "--ignore-not-found", "--timeout=120s")


@pytest.fixture
def sa_kubeconfig(kubectl, deployed_rbac, tmp_path):
    """A kubeconfig that authenticates only as the operator's ServiceAccount."""
    token = kubectl.in_namespace(SYSTEM_NS).create_token(SA)
    anon = json.loads(kubectl._token_kubeconfig().read_text())
    anon["users"] = [{"name": "token", "user": {"token": token}}]
    path = tmp_path / "operator-kubeconfig"
    path.write_text(json.dumps(anon))
    return path, token


def test_rendered_rbac_has_no_wildcards(deployed_rbac):
    for doc in deployed_rbac.split("\n---\n"):
        if "kind: ClusterRole\n" in doc or "kind: Role\n" in doc:
            assert "'*'" not in doc and '"*"' not in doc and "- *" not in doc, doc


def test_operator_works_with_its_own_rbac_only(operator_process, keda, kubectl, k, namespace, sa_kubeconfig, tmp_path):
    path, token = sa_kubeconfig
    assert k.run("auth", "whoami", "-o", "json", token=token).stdout.count(f"system:serviceaccount:{SYSTEM_NS}:{SA}")
    operator_process.stop()
    proc = OperatorProcess(path, tmp_path)
    try:
        proc.start(
            {"PULSAR_ADMIN_URL": ADMIN_URL, "POD_NAMESPACE": SYSTEM_NS},
            extra_args=("--leader-elect", f"--leader-election-namespace={SYSTEM_NS}"),
        )
        k.apply(
            {
                "apiVersion": "model.youxam.com/v1alpha1",
                "kind": "AIModel",
                "metadata": {"name": "ai-model-sample"},
                "spec": {
                    "type": "local",
                    "model": "TinyLlama-1.1B",
                    "replicas": 2,
                    "image": "user/image:tag",
                    "msgBacklogThreshold": 2,
                },
            }
        )
        wait_for(
            "Ready",
            lambda: ((k.get("aimodel", "ai-model-sample") or {}).get("status") or {}).get("readyReplicas"),
            timeout=60,
        )
        wait_for("the ScaledObject", lambda: k.get("scaledobject", "ai-model-sample-scaledobject"), timeout=30)
        lease = kubectl.in_namespace(SYSTEM_NS).get("lease", "aimodel-operator-leader")
        assert lease["spec"]["holderIdentity"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"worker.{time.time_ns():x}"},
            "involvedObject": {"kind": "AIModel", "name": "ai-model-sample", "namespace": namespace},
            "reason": "ConfigurationError",
            "message": "bad config",
            "type": "Warning",
        }
        k("create", "-f", "-", input=json.dumps(event))
        wait_for("Failed", lambda: k.get("aimodel", "ai-model-sample")["status"]["state"] == "Failed")
        k("patch", "aimodel", "ai-model-sample", "--type=merge", "-p", '{"spec":{"maxProcessNum":8}}')
        wait_for("Running", lambda: k.get("aimodel", "ai-model-sample")["status"]["state"] == "Running")
        k(
            "patch",
            "aimodel",
            "ai-model-sample",
            "--type=json",
            "-p",
            '[{"op":"remove","path":"/spec/msgBacklogThreshold"}]',
        )
        wait_for(
            "the ScaledObject deleted",
            lambda: k.get("scaledobject", "ai-model-sample-scaledobject") is None,
            timeout=30,
        )
        k("delete", "aimodel", "ai-model-sample")
        wait_for(
            "the Deployment collected", lambda: k.get("deployment", "ai-model-sample-deployment") is None, timeout=60
        )
        # What concerns this test's namespace and the operator's own (other tests' namespaces may be
        # going away meanwhile, and the API server refuses writes there).
        log = "\n".join(line for line in proc.log_tail(400).splitlines() if namespace in line or SYSTEM_NS in line)
        assert "HTTP 403" not in log and "forbidden" not in log.lower(), log
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("verb", "resource", "where"),
    [
        ("delete", "namespaces", None),
        ("delete", "nodes", None),
        ("create", "pods", "default"),
        ("delete", "deployments", "default"),
        ("update", "deployments", "default"),
        ("create", "clusterroles", None),
        ("escalate", "roles", "default"),
        ("bind", "clusterroles", None),
        ("impersonate", "users", None),
        ("patch", "aimodels.model.youxam.com", "default"),
        ("delete", "aimodels.model.youxam.com", "default"),
        ("delete", "configmaps", "default"),
    ],
)
def test_operator_identity_is_not_cluster_admin(kubectl, sa_kubeconfig, verb, resource, where):
    _, token = sa_kubeconfig
    args = ["auth", "can-i", verb, resource]
    if where:
        args += ["-n", where]
    res = kubectl.run(*args, token=token, check=False)
    assert res.stdout.strip() == "no", (verb, resource, res.stdout, res.stderr)


def test_operator_cannot_change_what_users_own(kubectl, sa_kubeconfig):
    """The API server itself refuses the operator's identity: it cannot delete a namespace or edit a spec."""
    _, token = sa_kubeconfig
    denied = kubectl.run("delete", "namespace", "default", "--dry-run=server", token=token, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    denied = kubectl.run("create", "configmap", "x", "-n", "default", "--dry-run=server", token=token, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr


def test_the_leader_election_role_reaches_its_own_lease_only(kubectl, deployed_rbac, sa_kubeconfig):
    _, token = sa_kubeconfig
    system = kubectl.in_namespace(SYSTEM_NS)

    def can(*args: str) -> str:
        return system.run("auth", "can-i", *args, token=token, check=False).stdout.strip()

    assert can("update", "leases/aimodel-operator-leader") == "yes"
    assert can("get", "leases/aimodel-operator-leader") == "yes"
    assert can("create", "leases") == "yes"
    assert can("update", "leases/someone-elses-lease") == "no"
    assert can("get", "leases/someone-elses-lease") == "no"
