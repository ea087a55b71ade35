"""The operator limited to some namespaces (config/scoped: RoleBindings, no ClusterRoleBinding)
serves models there, cannot even see the others, and may read no Secret outside them."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from kube_helpers import REPO, OperatorProcess, drop_namespace, wait_for

SYSTEM_NS = "aimodel-operator-system"
SA = "aimodel-operator-controller-manager"
WHO = f"system:serviceaccount:{SYSTEM_NS}:{SA}"


def model(name: str, model_name: str | None = None) -> dict:
    """An AIModel; a model name of its own by default (one namespace's name is refused in another)."""
    return {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {"name": name},
        "spec": {"type": "local", "model": model_name or f"scoped-{name}", "image": "user/image:tag"},
    }


@pytest.fixture
def other_namespaces(kubectl):
    """A second watched namespace and one that is not watched."""
    names = (f"t-scoped-b-{uuid.uuid4().hex[:5]}", f"t-unwatched-{uuid.uuid4().hex[:5]}")
    for name in names:
        kubectl("create", "namespace", name)
    yield names
    for name in names:
        drop_namespace(kubectl, name)


@pytest.fixture
def scoped_rbac(kubectl, crds_installed, namespace, other_namespaces):
    """config/scoped applied, its two namespaces being this test's and a second one."""
    # The operator's namespace of an earlier test (config/default) may still be terminating.
    wait_for("aimodel-operator-system to be gone", lambda: kubectl.get("namespace", SYSTEM_NS) is None, timeout=120)
    rendered = kubectl("kustomize", str(REPO / "config" / "scoped"))
    # One cluster-wide grant only: creating TokenReviews and SubjectAccessReviews, which the secure
    # /metrics needs (both are cluster-scoped) and which read nothing of any namespace.
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    bindings = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert [b["roleRef"]["name"] for b in bindings] == ["aimodel-operator-metrics-auth-role"]
    auth = "aimodel-operator-metrics-auth-role"
    (role,) = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == auth]
    grants = [
        (g, r, tuple(rule["verbs"])) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    ]
    assert sorted(grants) == [
        ("authentication.k8s.io", "tokenreviews", ("create",)),
        ("authorization.k8s.io", "subjectaccessreviews", ("create",)),
    ]
    rendered = rendered.replace("team-a", namespace).replace("team-b", other_namespaces[0])
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=rendered)
    yield
    kubectl("delete", "clusterrole", "aimodel-operator-manager-role", "--ignore-not-found")
    kubectl("delete", "clusterrolebinding", "aimodel-operator-metrics-auth-rolebinding", "--ignore-not-found")
    kubectl("delete", "clusterrole", "aimodel-operator-metrics-auth-role", "--ignore-not-found")
    # Gone before the next test installs the operator there again.
    kubectl("delete", "namespace", SYSTEM_NS, "--ignore-not-found", "--timeout=120s")


def test_a_scoped_operator_serves_its_namespaces_only(
    operator_process, kubectl, k, namespace, other_namespaces, scoped_rbac, tmp_path
):
    watched_b, unwatched = other_namespaces
    # Its RBAC: its rules in the watched namespaces, nothing elsewhere.
    for verb, resource, where, answer in [
        ("list", "secrets", namespace, "yes"),
        ("list", "secrets", watched_b, "yes"),
        ("list", "secrets", unwatched, "no"),
        ("get", "secrets", unwatched, "no"),
        ("list", "aimodels.model.youxam.com", unwatched, "no"),
        ("list", "pods", unwatched, "no"),
        ("list", "secrets", None, "no"),  # no cluster-wide list either
    ]:
        args = ["auth", "can-i", verb, resource, f"--as={WHO}"]
        args += ["-n", where] if where else ["--all-namespaces"]
        res = kubectl.run(*args, check=False)
        assert res.stdout.strip() == answer, (verb, resource, where, res.stdout, res.stderr)

    token = kubectl.in_namespace(SYSTEM_NS).create_token(SA)
    cfg = json.loads(kubectl._token_kubeconfig().read_text())
    cfg["users"] = [{"name": "token", "user": {"token": token}}]
    path = tmp_path / "operator-kubeconfig"
    path.write_text(json.dumps(cfg))

    operator_process.stop()
    proc = OperatorProcess(path, tmp_path)
    try:
        proc.start(
            {"POD_NAMESPACE": SYSTEM_NS},
            extra_args=(
                f"--namespaces={namespace},{watched_b}",
                "--leader-elect",
                f"--leader-election-namespace={SYSTEM_NS}",
            ),
        )
        kubectl.in_namespace(unwatched).apply(model("ignored"))
        k.apply(model("a"))
        kubectl.in_namespace(watched_b).apply(model("b"))
        k("wait", "--for=condition=Ready", "aimodel/a", "--timeout=60s")
        kubectl.in_namespace(watched_b)("wait", "--for=condition=Ready", "aimodel/b", "--timeout=60s")
        # The model of the unwatched namespace was made before the others and is still untouched.
        outside = kubectl.in_namespace(unwatched)
        assert outside.get("aimodel", "ignored").get("status") is None
        assert outside.get("deployment", "ignored-deployment") is None
        # A worker's report and a spec change still work in its namespaces.
        k("patch", "aimodel", "a", "--type=merge", "-p", '{"spec":{"maxProcessNum":8}}')
        wait_for("generation 2 observed", lambda: k.get("aimodel", "a")["status"].get("observedGeneration") == 2)
        assert "HTTP 403" not in proc.log_tail(400), proc.log_tail(400)
        assert f"watching namespaces={namespace},{watched_b}" in proc.log_tail(400)
    finally:
        proc.stop()


@pytest.fixture
def many_namespaces(kubectl):
    """Eight more namespaces: with a watch per kind in each, more watches than pooled connections."""
    names = [f"t-many-{i}-{uuid.uuid4().hex[:5]}" for i in range(8)]
    for name in names:
        kubectl("create", "namespace", name)
    yield names
    for name in names:
        drop_namespace(kubectl, name)


def test_an_operator_watching_many_namespaces_serves_every_one(
    operator_process, kubeconfig, kubectl, many_namespaces, tmp_path
):
    # Each watch holds a connection as long as it runs: 9 to 11 kinds in 8 namespaces are more
    # watches than the 64 connections of the request pool, and requests must still get through.
    operator_process.stop()
    proc = OperatorProcess(kubeconfig, tmp_path)
    try:
        proc.start(extra_args=(f"--namespaces={','.join(many_namespaces)}",))
        for ns in many_namespaces:
            kubectl.in_namespace(ns).apply(model("m", f"scoped-{ns}"))
        for ns in many_namespaces:
            kubectl.in_namespace(ns)("wait", "--for=condition=Ready", "aimodel/m", "--timeout=60s")
    finally:
        proc.stop()
