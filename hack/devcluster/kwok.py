"""kwok, standing in for the kubelets: it manages every node and simulates their pods.

Nodes renew a Lease in kube-node-lease as real kubelets do
(``--node-lease-duration-seconds``). Without leases kwok's only heartbeat is a
node status update every 20-45 s, which the node lifecycle controller
(40 s grace period) takes for a dead node now and then: it marks the node
NotReady and every pod on it not Ready, and kwok never sets the pods Ready
again.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import gobuild, versions
from .base import free_port, log
from .kubernetes import Kube
from .procs import Supervisor

NODE_COUNT = 2
# As a kubelet's default (nodeLeaseDurationSeconds 40); kwok renews at a quarter of it.
NODE_LEASE_SECONDS = 40


def bin_dir() -> Path:
    return gobuild.tool_dir("kwok", versions.KWOK) / "bin"


def build() -> Path:
    dest = bin_dir()
    if (dest / "kwok").exists():
        return dest
    log(f"building kwok {versions.KWOK}")
    tmp = gobuild.staging_dir(dest)
    gobuild.run_go(
        ["install", "-v", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{versions.KWOK}"],
        dest.parent,
        "kwok",
        GOBIN=str(tmp),
    )
    return gobuild.publish(dest, tmp)


def start(procs: Supervisor, kube: Kube) -> None:
    """Start kwok, create the nodes and wait until they are Ready."""
    procs.spawn(
        "kwok",
        [
            str(bin_dir() / "kwok"),
            f"--kubeconfig={kube.kubeconfig}",
            "--manage-all-nodes=true",
            f"--server-address=127.0.0.1:{free_port()}",
            "--node-ip=127.0.0.1",
            "--cidr=10.244.0.1/16",
            f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
        ],
    )
    kube.kubectl("apply", "-f", "-", input=nodes_manifest(NODE_COUNT))
    procs.wait(f"{NODE_COUNT} Ready nodes", lambda: kube.ready_nodes() >= NODE_COUNT, timeout=60)


def nodes_manifest(count: int) -> str:
    # Without status.nodeInfo: kwok fills it, and kubectl's validation refuses a partial one.
    items = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"kwok-node-{i}",
                "labels": {"type": "kwok", "kubernetes.io/hostname": f"kwok-node-{i}", "kubernetes.io/os": "linux"},
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "250"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "250"},
            },
        }
        for i in range(count)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
