"""The operator runs with nothing but the RBAC of config/default, that RBAC is not cluster-admin, and
config/default's fence (a ValidatingAdmissionPolicy) refuses it what RBAC would allow but is not its own."""

from __future__ import annotations

import json
import time

import pytest

from kube_helpers import REPO, OperatorProcess, wait_for

SYSTEM_NS = "aimodel-operator-system"
SA = "aimodel-operator-controller-manager"
USER = f"system:serviceaccount:{SYSTEM_NS}:{SA}"
ADMIN_URL = "http://127.0.0.1:9"
FENCE_REFUSAL = "the aimodel-operator may write only its own children"


@pytest.fixture(scope="module")
def deployed_rbac(kubectl, crds_installed):
    """config/default applied; removed afterwards except the CRD, which other tests share."""
    rendered = kubectl("kustomize", str(REPO / "config" / "default"))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=rendered)
    foreign = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "probe", "namespace": SYSTEM_NS}})

    def fenced() -> bool:
        res = kubectl.run("create", "--dry-run=server", "--as", USER, "-f", "-", input=foreign, check=False)
        return res.returncode != 0 and FENCE_REFUSAL in res.stderr

    # A new policy takes effect once the API server has compiled it.
    wait_for("config/default's fence in force", fenced, timeout=30)
    yield rendered
    kubectl("delete", "validatingadmissionpolicybinding", "aimodel-operator-fence", "--ignore-not-found")
    kubectl("delete", "validatingadmissionpolicy", "aimodel-operator-fence", "--ignore-not-found")
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


# -- the fence ----------------------------------------------------------------------------------


def _as_operator(k, *args: str, input: str | None = None):
    """kubectl impersonating the operator's ServiceAccount, every write a server-side dry run (which
    passes admission, the fence included, and changes nothing)."""
    return k.run(*args, "--as", USER, "--dry-run=server", input=input, check=False)


def _refused(res) -> str:
    assert res.returncode != 0, f"admitted: {res.stdout}"
    assert FENCE_REFUSAL in res.stderr, res.stderr
    return res.stderr


def _model(k, name: str) -> dict:
    k.apply(
        {
            "apiVersion": "model.youxam.com/v1alpha1",
            "kind": "AIModel",
            "metadata": {"name": name},
            "spec": {"type": "local", "model": "m", "image": "user/image:tag", "replicas": 0},
        }
    )
    return k.get("aimodel", name)


def _controller_ref(model: dict) -> dict:
    return {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "name": model["metadata"]["name"],
        "uid": model["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


OURS = {"app.kubernetes.io/managed-by": "aimodel-operator"}


def test_the_fence_refuses_the_operator_writes_to_what_is_not_its_own(kubectl, deployed_rbac, k, namespace):
    """RBAC lets the operator write every Secret, Deployment and Lease there is; the API server's
    admission refuses it each one that is not its own, naming what it refused."""
    model = _model(k, "fenced")
    k("create", "secret", "generic", "foreign", "--from-literal=API_KEY=theirs")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "foreign"}, "stringData": {"k": "v"}}
    # RBAC alone would allow all of these: the refusals below are the fence's.
    for verb in ("create", "patch", "delete"):
        assert k.run("auth", "can-i", verb, "secrets", "--as", USER).stdout.strip() == "yes"

    message = _refused(_as_operator(k, "patch", "secret", "foreign", "--type=merge", "-p", '{"data":{"k":"dg=="}}'))
    assert f"refused: UPDATE secrets {namespace}/foreign" in message, message
    _refused(_as_operator(k, "delete", "secret", "foreign"))
    # Taking a stranger over by adding the label and a controller reference is an edit of a stranger.
    takeover = json.dumps({"metadata": {"labels": OURS, "ownerReferences": [_controller_ref(model)]}})
    _refused(_as_operator(k, "patch", "secret", "foreign", "--type=merge", "-p", takeover))
    # A new object needs both the label and a controller reference to an AIModel.
    unlabelled = {**secret, "metadata": {"name": "new", "ownerReferences": [_controller_ref(model)]}}
    _refused(_as_operator(k, "create", "-f", "-", input=json.dumps(unlabelled)))
    not_controller = {
        **secret,
        "metadata": {
            "name": "new",
            "labels": OURS,
            "ownerReferences": [{**_controller_ref(model), "controller": False}],
        },
    }
    _refused(_as_operator(k, "create", "-f", "-", input=json.dumps(not_controller)))
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "foreign", "labels": OURS},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
        },
    }
    _refused(_as_operator(k, "create", "-f", "-", input=json.dumps(deployment)))
    # Events: only its own reports about AIModels, and it never edits one (a worker's report is not its own).
    pod_event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "about-a-pod"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "p", "namespace": namespace},
        "reason": "R",
        "message": "m",
        "reportingComponent": "aimodel-operator",
    }
    _refused(_as_operator(k, "create", "-f", "-", input=json.dumps(pod_event)))
    k("create", "-f", "-", input=json.dumps({**pod_event, "metadata": {"name": "a-workers-report"}}))
    # (kubectl patch would GET first, which RBAC refuses: an apply is the PATCH alone)
    report = {**pod_event, "metadata": {"name": "a-workers-report"}, "count": 2}
    _refused(_as_operator(k, "apply", "--server-side", "-f", "-", input=json.dumps(report)))
    # A Lease of another name in its own namespace (RBAC lets it create any).
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "someone-else"}}
    _refused(_as_operator(kubectl.in_namespace(SYSTEM_NS), "create", "-f", "-", input=json.dumps(lease)))
    # Nothing changed, and the fence fences the operator alone: the admin may do the same.
    assert k.get("secret", "foreign")["data"]["API_KEY"]
    admin = k.run("patch", "secret", "foreign", "--dry-run=server", "--type=merge", "-p", takeover, check=False)
    assert admin.returncode == 0, admin.stderr


def test_the_fence_admits_what_the_operator_owns(kubectl, deployed_rbac, k, namespace):
    """Its children (label and controller reference, before and after), an AIModel's status, its
    own Events about AIModels and its Lease pass."""
    model = _model(k, "fenced")
    ref = _controller_ref(model)
    child = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "fenced-child", "labels": OURS, "ownerReferences": [ref]},
        "stringData": {"API_KEY": "k"},
    }
    created = _as_operator(k, "create", "-f", "-", input=json.dumps(child))
    assert created.returncode == 0, created.stderr
    k("create", "-f", "-", input=json.dumps(child))  # for real (the admin) to edit and delete below
    patched = _as_operator(k, "patch", "secret", "fenced-child", "--type=merge", "-p", '{"stringData":{"API_KEY":"x"}}')
    assert patched.returncode == 0, patched.stderr
    # Giving a child away (dropping the label) is an edit the result of which is no longer its own.
    _refused(_as_operator(k, "label", "secret", "fenced-child", "app.kubernetes.io/managed-by-"))
    # A child whose label someone else removed is still controlled by its AIModel: labelling it
    # again (the operator restoring its child) passes, with an apply as the operator writes.
    k("label", "secret", "fenced-child", "app.kubernetes.io/managed-by-")
    relabelled = _as_operator(
        k, "apply", "--server-side", "--field-manager=aimodel-operator", "-f", "-", input=json.dumps(child)
    )
    assert relabelled.returncode == 0, relabelled.stderr
    deleted = _as_operator(k, "delete", "secret", "fenced-child")
    assert deleted.returncode == 0, deleted.stderr
    # Its status write is a server-side apply, as the operator's own (kubectl patch would GET first).
    applied = {**{f: model[f] for f in ("apiVersion", "kind")}, "metadata": {"name": "fenced"}}
    status = _as_operator(
        k,
        "apply",
        "--server-side",
        "--subresource=status",
        "--field-manager=aimodel-operator",
        "-f",
        "-",
        input=json.dumps({**applied, "status": {"state": "Running"}}),
    )
    assert status.returncode == 0, status.stderr
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "fenced.1"},
        "involvedObject": {
            "apiVersion": "model.youxam.com/v1alpha1",
            "kind": "AIModel",
            "name": "fenced",
            "namespace": namespace,
        },
        "reason": "R",
        "message": "m",
        "source": {"component": "aimodel-operator"},
        "reportingComponent": "aimodel-operator",
        "reportingInstance": "test",
    }
    posted = _as_operator(k, "create", "-f", "-", input=json.dumps(event))
    assert posted.returncode == 0, posted.stderr
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "aimodel-operator-leader"}}
    taken = _as_operator(kubectl.in_namespace(SYSTEM_NS), "create", "-f", "-", input=json.dumps(lease))
    assert taken.returncode == 0 or "AlreadyExists" in taken.stderr, taken.stderr
