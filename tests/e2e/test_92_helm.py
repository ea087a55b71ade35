"""The Helm chart on the local cluster with the real helm: install, the operator working with the
chart's RBAC alone, an upgrade whose PULSAR_URL reaches every worker Deployment, a scoped install,
and an uninstall that leaves nothing of the release behind.

Pods do not run on the simulated nodes, so the operator runs as a local process the way its pod
would: the installed Deployment's arguments and environment (fieldRefs and secretKeyRefs resolved),
authenticated by a token of the chart's ServiceAccount.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from kube_helpers import REPO, Kubectl, OperatorProcess, drop_namespace, wait_for

CHART = REPO / "charts" / "aimodel-operator"
RELEASE = "helm-e2e"
FULLNAME = f"{RELEASE}-aimodel-operator"
SA = f"{FULLNAME}-controller-manager"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
# Every kind the chart renders, namespaced and cluster-wide.
CHART_KINDS = (
    "serviceaccounts,deployments,services,poddisruptionbudgets,roles,rolebindings,secrets,configmaps",
    "clusterroles,clusterrolebindings",
)


@pytest.fixture(scope="module")
def helm(kubeconfig):
    from devcluster import helm as helm_tool

    binary = str(helm_tool.build())

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [binary, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=300
        )
        if check and res.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {res.stderr.strip()}")
        return res

    return run


@pytest.fixture
def release_ns(kubectl, helm):
    """The release namespace, with the Pulsar token Secret the chart names (created before the install).
    A release a failed test left behind is uninstalled: its cluster-wide RBAC would block the next one."""
    name = f"t-helm-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    kubectl.in_namespace(name)("create", "secret", "generic", "pulsar-credentials", "--from-literal=token=tok-1")
    yield name
    helm("uninstall", RELEASE, "--namespace", name, "--ignore-not-found", "--wait", "--timeout=60s", check=False)
    drop_namespace(kubectl, name)


def _leftovers(kubectl: Kubectl, namespaces: tuple[str, ...]) -> list[str]:
    """Objects labelled as the release's, wherever they are (the release record included)."""
    found: list[str] = []
    for ns in namespaces:
        out = kubectl.in_namespace(ns)("get", CHART_KINDS[0], "-l", INSTANCE, "-o", "name")
        found += [f"{ns}/{line}" for line in out.split()]
        out = kubectl.in_namespace(ns)("get", "secrets", "-l", f"owner=helm,name={RELEASE}", "-o", "name")
        found += [f"{ns}/{line}" for line in out.split()]
    found += kubectl("get", CHART_KINDS[1], "-l", INSTANCE, "-o", "name").split()
    return found


def _pod_env(kubectl: Kubectl, release_ns: str) -> tuple[dict[str, str], list[str]]:
    """What the operator's pod would get: its environment (valueFrom resolved) and its arguments."""
    deploy = kubectl.in_namespace(release_ns).get("deployment", f"{FULLNAME}-controller-manager")
    assert deploy is not None
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for item in container["env"]:
        source = item.get("valueFrom")
        if source is None:
            env[item["name"]] = item.get("value", "")
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": f"{FULLNAME}-pod-0", "metadata.namespace": release_ns}[path]
        else:
            ref = source["secretKeyRef"]
            secret = kubectl.in_namespace(release_ns).get("secret", ref["name"])
            assert secret is not None or ref.get("optional"), ref
            if secret is not None:
                env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    args = container["args"]
    assert args[0] == "run"
    # The local process binds to loopback on ports of its own (OperatorProcess sets them).
    args = [a for a in args[1:] if not a.startswith(("--bind-address", "--metrics-port"))]
    return env, args


def _sa_kubeconfig(kubectl: Kubectl, release_ns: str, path: Path) -> tuple[Path, str]:
    token = kubectl.in_namespace(release_ns).create_token(SA)
    cfg = json.loads(kubectl._token_kubeconfig().read_text())
    cfg["users"] = [{"name": "token", "user": {"token": token}}]
    path.write_text(json.dumps(cfg))
    return path, token


def _model(name: str) -> dict:
    return {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {"name": name},
        "spec": {
            "type": "remote",
            "model": "gpt-4o",
            "baseURL": "https://api.example",
            "apiKey": "sk-test",
            "image": "user/image:tag",
        },
    }


def _worker_env(k: Kubectl, name: str) -> dict[str, object]:
    deploy = k.get("deployment", f"{name}-deployment")
    assert deploy is not None, name
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_install_run_upgrade_uninstall(helm, kubectl, k, namespace, release_ns, operator_process, tmp_path):
    helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        release_ns,
        "--set",
        "pulsar.url=pulsar://pulsar-old:6650",
        "--set",
        "pulsar.tokenSecret.name=pulsar-credentials",
        "--wait",
        "--timeout=120s",
    )
    status = json.loads(helm("status", RELEASE, "-n", release_ns, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    manager = kubectl.in_namespace(release_ns).get("deployment", f"{FULLNAME}-controller-manager")
    assert manager["spec"]["replicas"] == 2 and manager["status"].get("readyReplicas") == 2
    assert kubectl.in_namespace(release_ns).get("poddisruptionbudget", f"{FULLNAME}-controller-manager")

    kubeconfig, token = _sa_kubeconfig(kubectl, release_ns, tmp_path / "operator-kubeconfig")
    who = kubectl.run("auth", "whoami", "-o", "json", token=token).stdout
    assert f"system:serviceaccount:{release_ns}:{SA}" in who
    env, args = _pod_env(kubectl, release_ns)
    assert env["PULSAR_URL"] == "pulsar://pulsar-old:6650" and env["PULSAR_TOKEN"] == "tok-1"

    operator_process.stop()
    proc = OperatorProcess(kubeconfig, tmp_path)
    try:
        proc.start(env, extra_args=tuple(args))
        names = ("helm-a", "helm-b")
        for name in names:
            k.apply(_model(name))
        for name in names:
            wait_for(
                f"{name} Running",
                lambda n=name: (k.get("aimodel", n).get("status") or {}).get("state") == "Running",
                timeout=60,
            )
            assert _worker_env(k, name)["PULSAR_URL"] == "pulsar://pulsar-old:6650"
        own = k.get("secret", "helm-a-worker-secrets")
        assert base64.b64decode(own["data"]["PULSAR_TOKEN"]).decode() == "tok-1"

        # A worker's error -> Failed; a spec change -> Running again.
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"worker.{time.time_ns():x}"},
            "involvedObject": {"kind": "AIModel", "name": "helm-a", "namespace": namespace},
            "reason": "AuthenticationError",
            "message": "invalid api key",
            "type": "Warning",
        }
        k("create", "-f", "-", input=json.dumps(event))
        wait_for("Failed", lambda: k.get("aimodel", "helm-a")["status"]["state"] == "Failed")
        k("patch", "aimodel", "helm-a", "--type=merge", "-p", '{"spec":{"maxProcessNum":8}}')
        wait_for("Running", lambda: k.get("aimodel", "helm-a")["status"]["state"] == "Running")

        # The upgrade: a new PULSAR_URL in the operator's Deployment; its new pod (this process,
        # restarted with the new environment) carries it to every worker Deployment.
        generation = manager["metadata"]["generation"]
        helm(
            "upgrade",
            RELEASE,
            str(CHART),
            "--namespace",
            release_ns,
            "--reuse-values",
            "--set",
            "pulsar.url=pulsar://pulsar-new:6650",
            "--wait",
            "--timeout=120s",
        )
        upgraded = kubectl.in_namespace(release_ns).get("deployment", f"{FULLNAME}-controller-manager")
        assert upgraded["metadata"]["generation"] == generation + 1
        env, args = _pod_env(kubectl, release_ns)
        assert env["PULSAR_URL"] == "pulsar://pulsar-new:6650" and env["PULSAR_TOKEN"] == "tok-1"
        proc.stop()
        proc.start(env, extra_args=tuple(args))
        for name in names:
            wait_for(
                f"{name}'s workers on the new PULSAR_URL",
                lambda n=name: _worker_env(k, n)["PULSAR_URL"] == "pulsar://pulsar-new:6650",
                timeout=60,
            )

        # Delete: the workers are garbage-collected.
        k("delete", "aimodel", "helm-b")
        wait_for("helm-b's Deployment collected", lambda: k.get("deployment", "helm-b-deployment") is None, timeout=60)
        log = "\n".join(line for line in proc.log_tail(400).splitlines() if namespace in line or release_ns in line)
        assert "HTTP 403" not in log and "forbidden" not in log.lower(), log
    finally:
        proc.stop()

    helm("uninstall", RELEASE, "--namespace", release_ns, "--wait", "--timeout=120s")
    wait_for("nothing of the release left", lambda: _leftovers(kubectl, (release_ns, namespace)) == [], timeout=60)
    assert RELEASE not in helm("list", "--all-namespaces", "-q").stdout.split()
    # The ServiceAccount is gone, and with it every token issued to it (once the API server's
    # token cache, 10 s for a success, has let go of it).
    wait_for(
        "the operator's token refused",
        lambda: "Unauthorized" in kubectl.run("auth", "whoami", token=token, check=False).stderr,
        timeout=30,
        interval=1,
    )
    # What is not the release's stays: the CRD (Helm never deletes crds/), the users' AIModels and
    # the Secret the platform team created.
    assert kubectl.get("crd", "aimodels.model.youxam.com") is not None
    assert k.get("aimodel", "helm-a") is not None
    assert kubectl.in_namespace(release_ns).get("secret", "pulsar-credentials") is not None


def test_scoped_install_grants_nothing_outside_its_namespaces(helm, kubectl, namespace, release_ns):
    unwatched = f"t-helm-unwatched-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", unwatched)
    who = f"system:serviceaccount:{release_ns}:{SA}"
    try:
        helm(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            release_ns,
            "--set",
            f"watchNamespaces={{{namespace}}}",
            "--set",
            "replicaCount=1",
        )
        # One cluster-wide grant only: creating TokenReviews and SubjectAccessReviews for the secure
        # /metrics (both cluster-scoped, reading nothing of any namespace).
        assert kubectl("get", "clusterrolebindings", "-l", INSTANCE, "-o", "name").split() == [
            f"clusterrolebinding.rbac.authorization.k8s.io/{FULLNAME}-metrics-auth-rolebinding"
        ]
        env = {
            e["name"]: e.get("value")
            for e in kubectl.in_namespace(release_ns).get("deployment", f"{FULLNAME}-controller-manager")["spec"][
                "template"
            ]["spec"]["containers"][0]["env"]
        }
        assert env["WATCH_NAMESPACES"] == namespace
        for verb, resource, where, answer in [
            ("list", "secrets", namespace, "yes"),
            ("patch", "deployments.apps", namespace, "yes"),
            ("list", "secrets", unwatched, "no"),
            ("get", "secrets", unwatched, "no"),
            ("list", "aimodels.model.youxam.com", unwatched, "no"),
            ("list", "secrets", None, "no"),
            ("get", "leases.coordination.k8s.io/aimodel-operator-leader", release_ns, "yes"),
            ("update", "leases.coordination.k8s.io/aimodel-operator-leader", release_ns, "yes"),
            # Its own Lease only (resourceNames), not every Lease of the namespace.
            ("update", "leases.coordination.k8s.io/another-lease", release_ns, "no"),
            ("create", "tokenreviews.authentication.k8s.io", None, "yes"),
            ("create", "subjectaccessreviews.authorization.k8s.io", None, "yes"),
            ("list", "namespaces", None, "no"),
        ]:
            cmd = ["auth", "can-i", verb, resource, f"--as={who}"]
            cmd += ["-n", where] if where else ["--all-namespaces"]
            res = kubectl.run(*cmd, check=False)
            assert res.stdout.strip() == answer, (verb, resource, where, res.stdout, res.stderr)
        helm("uninstall", RELEASE, "--namespace", release_ns, "--wait", "--timeout=120s")
        wait_for("nothing of the release left", lambda: _leftovers(kubectl, (release_ns, namespace)) == [], timeout=60)
    finally:
        drop_namespace(kubectl, unwatched)
