"""Fault injection on the local control plane: etcd and kube-apiserver killed and restarted keep the data."""

from __future__ import annotations

import signal
import time

import pytest

from kube_helpers import wait_for


def test_etcd_and_apiserver_survive_sigkill_and_restart(cluster, kubectl, k):
    _, local = cluster
    if local is None:
        pytest.skip("fault injection needs the local devcluster (AIMODEL_TEST_KUBECONFIG names an external cluster)")
    k("create", "configmap", "before", "--from-literal=state=kept")
    etcd_pid = local.component("etcd").pid
    api_pid = local.component("kube-apiserver").pid

    started = time.monotonic()
    local.kill_component("etcd", signal.SIGKILL)
    assert not local.alive(local.component("etcd"))
    local.restart_component("etcd")
    etcd_done = time.monotonic()

    local.kill_component("kube-apiserver", signal.SIGKILL)
    assert not local.ready()
    local.restart_component("kube-apiserver")
    api_done = time.monotonic()
    print(f"etcd kill+restart {etcd_done - started:.1f}s, kube-apiserver kill+restart {api_done - etcd_done:.1f}s")

    # Restarted in place: new pids, one record each.
    names = [c.name for c in local.components()]
    assert names.count("etcd") == 1 and names.count("kube-apiserver") == 1
    assert local.component("etcd").pid != etcd_pid
    assert local.component("kube-apiserver").pid != api_pid

    cm = wait_for("the ConfigMap written before the kills", lambda: k.get("configmap", "before"), timeout=60)
    assert cm["data"] == {"state": "kept"}
    wait_for(
        "a new ConfigMap to be created",
        lambda: k.run("create", "configmap", "after", check=False).returncode == 0 or k.get("configmap", "after"),
        timeout=60,
    )
    assert k.get("configmap", "after") is not None
    # The rest of the control plane rode it out: the session's later tests need it.
    assert not local.dead_components(), [c.name for c in local.dead_components()]
    wait_for("the cluster to report up", local.is_up, timeout=60)
    assert kubectl("get", "namespace", k.namespace, "-o", "name").strip() == f"namespace/{k.namespace}"
