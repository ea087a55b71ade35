"""The kubebuilder make targets against the test cluster. Uninstall removes the CRD: it is installed again after."""

from __future__ import annotations

import os
import subprocess

from kube_helpers import REPO, established, wait_for


def make(kubectl, *targets: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(kubectl.kubeconfig)}
    res = subprocess.run(
        ["make", "-s", *targets, f"KUBECTL={kubectl.binary}"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, f"make {' '.join(targets)}: {res.stdout}\n{res.stderr}"
    return res


def test_install_deploy_undeploy_uninstall_each_twice(kubectl, operator_process):
    operator_process.stop()
    for _ in range(2):
        make(kubectl, "install")
    assert kubectl.get("crd", "aimodels.model.youxam.com")
    for _ in range(2):
        make(kubectl, "deploy", "IMG=example.invalid/aimodel-operator:test")
    system = kubectl.in_namespace("aimodel-operator-system")
    deployment = wait_for(
        "the operator Deployment", lambda: system.get("deployment", "aimodel-operator-controller-manager")
    )
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "example.invalid/aimodel-operator:test"
    for _ in range(2):
        make(kubectl, "undeploy")
    assert system.get("deployment", "aimodel-operator-controller-manager") is None
    assert kubectl.get("clusterrole", "aimodel-operator-manager-role") is None
    try:
        for _ in range(2):
            make(kubectl, "uninstall")
        wait_for("the CRD removed", lambda: kubectl.get("crd", "aimodels.model.youxam.com") is None, timeout=60)
    finally:
        # The tests that follow (the fault suite) need the CRD the session installed.
        make(kubectl, "install")
        established(kubectl, "aimodels.model.youxam.com")
