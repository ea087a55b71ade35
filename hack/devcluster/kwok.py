"""kwok, standing in for the kubelets: it manages every node and simulates their pods.

Pods go through kwok's default ("fast") stages: Running and Ready at once.
Pods whose worker image starts with ``kwok.fault/`` go through fault stages
instead, so that tests drive the real pod status a kubelet would write:

- ``kwok.fault/crashloop``: the worker reports ``ConfigurationError: Local model
  "<MODEL_NAME>" is not supported.`` (its termination message) and exits 1, again
  and again: ``CrashLoopBackOff``, a restart every 10 s;
- ``kwok.fault/unpullable``: ``ImagePullBackOff``.

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

import yaml

from . import gobuild, versions
from .base import free_port, log
from .kubernetes import Kube
from .procs import Supervisor

NODE_COUNT = 2
# A GPU node pool beside the CPU nodes, as on a production cluster: the scheduler decides where a
# worker that asks for nvidia.com/gpu may go. Labelled like NVIDIA's GPU feature discovery does,
# and tainted so that only workers that tolerate it land there.
GPU_NODE_COUNT = 2
GPUS_PER_NODE = 4
GPU_LABEL = "nvidia.com/gpu.present"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
# As a kubelet's default (nodeLeaseDurationSeconds 40); kwok renews at a quarter of it.
NODE_LEASE_SECONDS = 40
MODULE = "sigs.k8s.io/kwok"
FAULT_PREFIX = "kwok.fault/"
CRASH_RESTART_MS = 10000


def bin_dir() -> Path:
    return gobuild.tool_dir("kwok", versions.KWOK) / "bin"


def build() -> Path:
    """The kwok binary, and its default pod stages from the same module version (stages/)."""
    dest = bin_dir()
    if (dest / "kwok").exists() and (dest / "stages").is_dir():
        return dest
    log(f"building kwok {versions.KWOK}")
    tmp = gobuild.staging_dir(dest)
    gobuild.run_go(
        ["install", "-v", "-trimpath", "-ldflags", "-s -w", f"{MODULE}/cmd/kwok@{versions.KWOK}"],
        dest.parent,
        "kwok",
        GOBIN=str(tmp),
    )
    fast = gobuild.module_source(MODULE, versions.KWOK, dest.parent) / "kustomize" / "stage" / "pod" / "fast"
    (tmp / "stages").mkdir()
    for path in sorted(fast.glob("pod-*.yaml")):
        (tmp / "stages" / path.name).write_bytes(path.read_bytes())
    return gobuild.publish(dest, tmp)


def _image_starts_with(prefix: str) -> str:
    return f'.spec.containers.[0].image | startswith("{prefix}")'


# A pod's status as a kubelet would write it, with the worker container as @CONTAINER@ says.
_POD_STATUS = """{{ $now := Now }}
{{ $model := "" }}
{{- range (index .spec.containers 0).env }}
{{- if eq .name "MODEL_NAME" }}{{ $model = .value }}{{ end }}
{{- end }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  type: ContainersReady
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: PodScheduled
containerStatuses:
@CONTAINER@
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName false ( or .metadata.uid "" ) ( or .metadata.name "" )
  ( or .metadata.namespace "" ) | Quote }}
phase: @PHASE@
startTime: {{ $now | Quote }}
"""


def _failing_status(container: str, phase: str = "Running") -> str:
    return _POD_STATUS.replace("@CONTAINER@", container).replace("@PHASE@", phase)


_CRASHED = """- image: {{ (index .spec.containers 0).image | Quote }}
  name: {{ (index .spec.containers 0).name | Quote }}
  ready: false
  restartCount: @RESTARTS@
  started: false
  state:
    waiting:
      reason: CrashLoopBackOff
      message: {{ printf "back-off 10s restarting failed container=%s pod=%s"
        (index .spec.containers 0).name .metadata.name | Quote }}
  lastState:
    terminated:
      exitCode: 1
      reason: Error
      message: {{ printf "ConfigurationError: Local model %q is not supported." $model | Quote }}
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}"""

_UNPULLABLE = """- image: {{ (index .spec.containers 0).image | Quote }}
  name: {{ (index .spec.containers 0).name | Quote }}
  ready: false
  restartCount: 0
  started: false
  state:
    waiting:
      reason: ImagePullBackOff
      message: {{ printf "Back-off pulling image %q" (index .spec.containers 0).image | Quote }}"""


def _stage(name: str, expressions: list[dict], template: str, delay_ms: int = 0) -> dict:
    spec: dict = {
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {"matchExpressions": [{"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}]},
        "next": {"statusTemplate": template},
    }
    spec["selector"]["matchExpressions"] += expressions
    if delay_ms:
        spec["delay"] = {"durationMilliseconds": delay_ms}
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name}, "spec": spec}


def stages() -> list[dict]:
    """kwok's default pod stages, kept away from fault images, and the fault stages."""
    out = []
    not_fault = {"key": _image_starts_with(FAULT_PREFIX), "operator": "NotIn", "values": ["true"]}
    for path in sorted((bin_dir() / "stages").glob("pod-*.yaml")):
        stage = yaml.safe_load(path.read_text())
        if stage["metadata"]["name"] == "pod-ready":
            stage["spec"]["selector"]["matchExpressions"].append(not_fault)
        out.append(stage)
    crashloop = {"key": _image_starts_with(FAULT_PREFIX + "crashloop"), "operator": "In", "values": ["true"]}
    fresh = {"key": ".status.podIP", "operator": "DoesNotExist"}
    started = {"key": ".status.podIP", "operator": "Exists"}
    restarts = "{{ add1 (index .status.containerStatuses 0).restartCount }}"
    out += [
        _stage("pod-fault-crashloop", [crashloop, fresh], _failing_status(_CRASHED.replace("@RESTARTS@", "1"))),
        _stage(
            "pod-fault-crashloop-restart",
            [crashloop, started],
            _failing_status(_CRASHED.replace("@RESTARTS@", restarts)),
            delay_ms=CRASH_RESTART_MS,
        ),
        _stage(
            "pod-fault-unpullable",
            [{"key": _image_starts_with(FAULT_PREFIX + "unpullable"), "operator": "In", "values": ["true"]}, fresh],
            _failing_status(_UNPULLABLE, phase="Pending"),
        ),
    ]
    return out


def start(procs: Supervisor, kube: Kube) -> None:
    """Start kwok, create the nodes and wait until they are Ready."""
    config = procs.dir / "kwok-stages.yaml"
    config.write_text(yaml.safe_dump_all(stages(), sort_keys=False))
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
            f"--config={config}",
        ],
    )
    kube.kubectl("apply", "-f", "-", input=nodes_manifest(NODE_COUNT, GPU_NODE_COUNT))
    total = NODE_COUNT + GPU_NODE_COUNT
    procs.wait(f"{total} Ready nodes", lambda: kube.ready_nodes() >= total, timeout=60)


def nodes_manifest(count: int, gpu_count: int = 0) -> str:
    """``count`` CPU nodes and ``gpu_count`` GPU nodes (GPUS_PER_NODE each, labelled and tainted)."""
    items = [_node(f"kwok-node-{i}") for i in range(count)]
    for i in range(gpu_count):
        node = _node(f"kwok-gpu-{i}", gpus=GPUS_PER_NODE)
        node["metadata"]["labels"][GPU_LABEL] = "true"
        node["spec"] = {"taints": [GPU_TAINT]}
        items.append(node)
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def _node(name: str, gpus: int = 0) -> dict:
    # Room for the benchmark's 1000 models x 3 workers (kwok's pods cost nothing).
    resources = {"cpu": "32", "memory": "256Gi", "pods": "2000"}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    # Without status.nodeInfo: kwok fills it, and kubectl's validation refuses a partial one.
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "status": {"allocatable": dict(resources), "capacity": dict(resources)},
    }
