"""`make demo`: the whole contract on the local cluster, shown step by step.

Starts the local cluster (building it on first use) with KEDA, installs the
CRD, runs the operator in the background, applies the seed's sample and shows
what it becomes; then fails it the way a worker pod would and heals it with a
spec change; makes its workers crash-loop and heals them; places a GPU model on the GPU node
pool and runs a local model server beside a worker (the samples); sends a request through Pulsar to the
reference worker (aimodel-worker) and shows the answer and the usage it publishes; and runs the
autoscaling loop (requests queued on Pulsar, KEDA, the HPA, the reference worker draining them).
The OpenAI-style API the worker calls and the gateway endpoint it answers are local stand-ins.
Everything keeps running afterwards for exploration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devcluster import pulsar
from devcluster.cluster import Cluster, ClusterError, free_port
from standins.endpoint import EndpointStandIn
from standins.kubelet import WorkerProcess, worker_environment
from standins.openai_api import OpenAIStandIn

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "config" / "samples" / "model_v1alpha1_aimodel_local.yaml"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(cluster: Cluster, *args: str) -> str:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    out = cluster.kubectl(*args)
    print(out, end="" if out.endswith("\n") else "\n", flush=True)
    return out


def wait(what: str, check, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ClusterError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"demo: timed out waiting for {what}")


def start_operator(cluster: Cluster) -> None:
    running = {c.name for c in cluster.components() if cluster.alive(c)}
    if "aimodel-operator" in running:
        print("operator already running", flush=True)
        return
    health = free_port()
    comp = cluster.spawn(
        "aimodel-operator",
        [
            str(Path(sys.executable).parent / "aimodel-operator"),
            "run",
            f"--health-port={health}",
            f"--metrics-port={free_port()}",
        ],
        env={
            "KUBECONFIG": str(cluster.kubeconfig),
            "PULSAR_ADMIN_URL": cluster.fact("pulsar_admin_url"),
            "PULSAR_URL": cluster.fact("pulsar_url"),
            "PULSAR_TOKEN": cluster.fact("pulsar_admin_token"),
        },
    )
    cluster.wait(
        "the operator's /readyz (caches synced)",
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=2).status == 200,
        comp,
        timeout=60,
    )
    print(f"operator running (pid {comp.pid}, log {comp.log})", flush=True)


def aimodel_field(cluster: Cluster, name: str, path: str) -> str:
    return cluster.kubectl("get", "aimodel", name, "-o", f"jsonpath={{{path}}}")


def report_as_worker(cluster: Cluster, name: str, reason: str, message: str) -> None:
    """Report an error with the model's own ServiceAccount token and the env the operator gave its pods."""
    deployment = json.loads(cluster.kubectl("get", "deployment", f"{name}-deployment", "-o", "json"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    token = cluster.kubectl("create", "token", sa).strip()
    cfg = json.loads(cluster.kubeconfig.read_text())
    cfg["users"] = [{"name": sa, "user": {"token": token}}]
    cfg["contexts"][0]["context"]["user"] = sa
    worker_kubeconfig = cluster.dir / "worker-kubeconfig"
    worker_kubeconfig.write_text(json.dumps(cfg))
    worker_kubeconfig.chmod(0o600)
    run_env = {
        **os.environ,
        "KUBECONFIG": str(worker_kubeconfig),
        "AIMODEL_NAME": env["AIMODEL_NAME"],
        "AIMODEL_NAMESPACE": env["AIMODEL_NAMESPACE"],
    }
    print(f"$ AIMODEL_NAME={env['AIMODEL_NAME']} AIMODEL_NAMESPACE={env['AIMODEL_NAMESPACE']} \\")
    print(
        f"  aimodel-report {reason} '{message}'    # as system:serviceaccount:{env['AIMODEL_NAMESPACE']}:{sa}",
        flush=True,
    )
    subprocess.run([str(Path(sys.executable).parent / "aimodel-report"), reason, message], env=run_env, check=True)


def patch_model(cluster: Cluster, name: str, patch: str) -> None:
    show(cluster, "patch", "aimodel", name, "--type=merge", "-p", patch)


def workers_condition(cluster: Cluster, name: str) -> str:
    return aimodel_field(cluster, name, '.status.conditions[?(@.type=="WorkersAvailable")].reason')


def worker_health(cluster: Cluster) -> None:
    step("Workers that crash-loop: the AIModel says why (kwok plays a worker that reports and exits 1)")
    patch_model(cluster, "ai-model-sample", '{"spec":{"model":"not-found-model","image":"kwok.fault/crashloop:1"}}')
    wait("a crash loop", lambda: workers_condition(cluster, "ai-model-sample") == "CrashLoopBackOff")
    show(cluster, "get", "pods", "-l", "model.youxam.com/aimodel=ai-model-sample")
    show(cluster, "get", "aimodel", "ai-model-sample", "-o", "wide")
    describe = cluster.kubectl("describe", "aimodel", "ai-model-sample")
    print("$ kubectl describe aimodel ai-model-sample   # (its conditions and events)")
    print(describe[describe.index("  Conditions:") :], end="", flush=True)

    step("A working image: the workers recover, and the AIModel says so")
    patch_model(cluster, "ai-model-sample", '{"spec":{"model":"TinyLlama-1.1B","image":"user/image:tag"}}')
    wait("WorkersAvailable", lambda: workers_condition(cluster, "ai-model-sample") == "WorkersAvailable")
    show(cluster, "get", "aimodel", "ai-model-sample", "-o", "wide")
    show(
        cluster,
        "get",
        "events",
        "--field-selector=involvedObject.name=ai-model-sample,reason=WorkersRecovered",
    )


SAMPLES = REPO / "config" / "samples"
# A volume for the local-server sample's model cache (the dev cluster has no storage provisioner).
MODEL_CACHE = [
    {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "demo-model-cache"},
        "spec": {
            "capacity": {"storage": "4Gi"},
            "accessModes": ["ReadOnlyMany"],
            "hostPath": {"path": "/var/lib/models"},
            "claimRef": {"namespace": "default", "name": "model-cache"},
        },
    },
    {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "model-cache", "namespace": "default"},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "resources": {"requests": {"storage": "4Gi"}},
            "volumeName": "demo-model-cache",
            "storageClassName": "",
        },
    },
]


def pods_of(cluster: Cluster, model: str) -> list[dict]:
    out = cluster.kubectl("get", "pods", "-l", f"model.youxam.com/aimodel={model}", "-o", "json")
    return json.loads(out)["items"]


def hardware(cluster: Cluster) -> None:
    step("A GPU model: each worker asks for a GPU; the scheduler places it on the GPU pool")
    show(cluster, "get", "nodes", "-L", "nvidia.com/gpu.present")
    show(cluster, "apply", "-f", str(SAMPLES / "model_v1alpha1_aimodel_gpu.yaml"))
    wait(
        "3 workers on GPU nodes",
        lambda: (
            len(ps := pods_of(cluster, "ai-model-gpu-sample")) == 3
            and all(p["spec"].get("nodeName", "").startswith("kwok-gpu-") for p in ps)
        ),
    )
    show(cluster, "get", "pods", "-l", "model.youxam.com/aimodel=ai-model-gpu-sample", "-o", "wide")

    step("A local model server beside the worker: llama.cpp as a native sidecar, a shared model cache")
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": MODEL_CACHE}))
    show(cluster, "apply", "-f", str(SAMPLES / "model_v1alpha1_aimodel_local_server.yaml"))
    wait(
        "the worker and its model server running",
        lambda: [p["status"].get("phase") for p in pods_of(cluster, "ai-model-local-server-sample")] == ["Running"],
    )
    show(
        cluster,
        "get",
        "pods",
        "-l",
        "model.youxam.com/aimodel=ai-model-local-server-sample",
        "-o",
        "custom-columns=POD:.metadata.name,SIDECARS:.spec.initContainers[*].name,"
        "CONTAINERS:.spec.containers[*].name,PHASE:.status.phase",
    )


KEDA_SAMPLE = "ai-model-keda-sample"
QUEUED = 10
WORKER_SAMPLE = "ai-model-worker-sample"


def start_worker(cluster: Cluster, name: str, **env: str) -> WorkerProcess:
    """The reference worker as a pod of ``name``'s Deployment would run it (its env, its token)."""
    pod_env = worker_environment(cluster.kubectl, cluster.kubeconfig, "default", name, cluster.dir / "workers")
    log = cluster.dir / "logs" / f"worker-{name}.log"
    print(f"$ aimodel-worker    # the env of {name}-deployment, its ServiceAccount's token; log {log}", flush=True)
    return WorkerProcess({**pod_env, **env}, log).start()


def queue_requests(cluster: Cluster, topic: str, messages: list[dict]) -> None:
    """What the API gateway does: each request as a message on model-<model>."""
    client = pulsar.client(cluster.fact("pulsar_url"), cluster.fact("pulsar_admin_token"))
    producer = client.create_producer(topic, block_if_queue_full=True)
    for message in messages:
        producer.send(json.dumps(message).encode())
    producer.close()
    client.close()


def one_request(cluster: Cluster, api: OpenAIStandIn, gateway: EndpointStandIn) -> None:
    import pulsar as pulsar_client

    step("The reference worker answers a request queued on Pulsar (aimodel-worker)")
    print(f"stand-ins: an OpenAI-style API at {api.url}, the gateway's answer endpoint at {gateway.post_url}")
    api.models.add("gpt-4o-mini")
    model = {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {"name": WORKER_SAMPLE},
        "spec": {
            "type": "remote",
            "model": "gpt-4o-mini",
            "baseURL": api.url,
            "apiKey": api.api_key,
            "image": "aimodel-worker:latest",
            "replicas": 1,
        },
    }
    print(f"$ kubectl apply -f -    # {WORKER_SAMPLE}: remote, gpt-4o-mini, baseURL {api.url}", flush=True)
    print(cluster.kubectl("apply", "-f", "-", input=json.dumps(model)), end="", flush=True)
    wait("state Running", lambda: aimodel_field(cluster, WORKER_SAMPLE, ".status.state") == "Running")
    client = pulsar.client(cluster.fact("pulsar_url"), cluster.fact("pulsar_admin_token"))
    # A subscription of the demo's own, gone afterwards (a durable one would keep collecting records).
    results = client.subscribe(
        "res-topic", f"demo-usage-{os.getpid()}", initial_position=pulsar_client.InitialPosition.Latest
    )
    # The gateway's answer URL is the workers' only allowed answer endpoint; on a real cluster the
    # operator passes it from its configuration (ANSWER_ENDPOINTS, the chart's answerEndpoints).
    worker = start_worker(cluster, WORKER_SAMPLE, ANSWER_ENDPOINTS=gateway.url)
    try:
        rid, message = gateway.request("gpt-4o-mini", "What does the AI Model Operator do?")
        print("queued on model-gpt-4o-mini, as the API gateway does:")
        print(f"  {json.dumps(message)}", flush=True)
        queue_requests(cluster, "persistent://public/default/model-gpt-4o-mini", [message])
        answer = gateway.answer(rid, timeout=60)
        print(f"the answer POSTed to {gateway.post_url}:")
        print(f"  {json.dumps(answer)}")
        record = results.receive(timeout_millis=30000)
        results.acknowledge(record)
        print("the usage record on res-topic:")
        print(f"  {record.data().decode()}", flush=True)
    finally:
        worker.stop()
        results.unsubscribe()
        client.close()


def hpa_targets(cluster: Cluster) -> str:
    """The TARGETS column of `kubectl get hpa` for the sample's HPA ('-' before it exists)."""
    out = cluster.kubectl("get", "hpa", "-o", "wide")
    lines = out.splitlines()
    if len(lines) < 2:
        return "-"
    header = lines[0]
    start = header.index("TARGETS")
    end = header.index("MINPODS")
    row = next((line for line in lines[1:] if KEDA_SAMPLE in line), "")
    return row[start:end].strip() or "-"


def autoscaling_loop(cluster: Cluster, admin: str, api: OpenAIStandIn, gateway: EndpointStandIn) -> None:
    token = cluster.fact("pulsar_admin_token")
    topic, subscription = "persistent/public/default/model-TinyLlama-1.1B", "model-TinyLlama-1.1B-subscription"
    rows: list[tuple[str, ...]] = []

    def snapshot(phase: str) -> None:
        dep = json.loads(cluster.kubectl("get", "deployment", f"{KEDA_SAMPLE}-deployment", "-o", "json"))
        rows.append(
            (
                phase,
                str(pulsar.backlog(admin, token, topic, subscription)),
                hpa_targets(cluster),
                str(dep["spec"].get("replicas")),
                str((dep.get("status") or {}).get("readyReplicas", 0)),
            )
        )
        for r in [HEADER, *rows] if len(rows) == 1 else rows[-1:]:
            print("  ".join(v.ljust(w) for v, w in zip(r, WIDTHS, strict=True)).rstrip(), flush=True)

    step("KEDA: the sample scales on its Pulsar backlog (Pulsar -> KEDA adapter -> HPA -> Deployment)")
    # What the workers and the API gateway do: the shared subscription, then requests on model-<model>.
    pulsar.subscribe(admin, token, topic, subscription)
    show(cluster, "apply", "-f", str(REPO / "config" / "samples" / "model_v1alpha1_aimodel_keda.yaml"))
    # Short knobs so the demo takes seconds: KEDA polls every 2 s, the HPA removes workers without waiting.
    patch_model(
        cluster, KEDA_SAMPLE, '{"spec":{"maxReplicas":6,"pollingInterval":2,"scaleDownStabilizationWindowSeconds":0}}'
    )
    wait("KEDA's HPA", lambda: hpa_targets(cluster) not in ("-", "<unknown>/2 (avg)"))
    snapshot("idle")
    api.models.add("TinyLlama-1.1B")
    ids, messages = [], []
    for i in range(QUEUED):
        rid, message = gateway.request("TinyLlama-1.1B", f"request {i}")
        ids.append(rid)
        messages.append(message)
    queue_requests(cluster, f"persistent://{topic.split('/', 1)[1]}", messages)
    print(f"queued {QUEUED} requests on {topic} (msgBacklogThreshold 2: {QUEUED // 2} workers wanted)", flush=True)
    wait("the HPA to see the backlog", lambda: hpa_targets(cluster) == f"{QUEUED}/2 (avg)", timeout=60)
    snapshot("queued")
    wait("5 ready workers", lambda: aimodel_field(cluster, KEDA_SAMPLE, ".status.readyReplicas") == "5", timeout=120)
    # The HPA's own view catches up within its sync period: 10 queued / 5 workers.
    wait("the HPA to count 5 workers", lambda: hpa_targets(cluster) == "2/2 (avg)", timeout=60)
    snapshot("scaled up")
    show(cluster, "get", "hpa")
    # A local model: the worker calls the model server of its pod (LOCAL_API_URL), the stand-in here.
    worker = start_worker(cluster, KEDA_SAMPLE, LOCAL_API_URL=api.url, ANSWER_ENDPOINTS=gateway.url)
    try:
        for rid in ids:
            gateway.answer(rid, timeout=60)
        wait("an empty backlog", lambda: pulsar.backlog(admin, token, topic, subscription) == 0)
    finally:
        worker.stop()
    print(f"the reference worker answered all {QUEUED} requests", flush=True)
    wait("the HPA to see it", lambda: hpa_targets(cluster) == "0/2 (avg)", timeout=60)
    snapshot("drained")
    wait("1 worker", lambda: aimodel_field(cluster, KEDA_SAMPLE, ".status.replicas") == "1", timeout=120)
    snapshot("scaled down")
    show(cluster, "get", "aimodel", KEDA_SAMPLE, "-o", "wide")


HEADER = ("phase", "backlog", "HPA targets", "replicas", "ready")
WIDTHS = (12, 8, 16, 9, 5)


def main() -> None:
    cluster = Cluster()
    step("Local cluster (etcd, kube-apiserver, controller-manager, scheduler, kwok nodes, KEDA, Pulsar)")
    cluster.up(keda=True, pulsar=True)
    step("Installing the AIModel CRD")
    show(cluster, "apply", "--server-side", "-f", str(REPO / "config" / "crd" / "bases"))
    cluster.wait_established("aimodels.model.youxam.com")
    cluster.install_keda_crds()
    step("Starting the operator")
    start_operator(cluster)

    step("Creating the seed's sample AIModel")
    show(cluster, "apply", "-f", str(SAMPLE))
    wait(
        "3 ready workers",
        lambda: (
            aimodel_field(cluster, "ai-model-sample", ".status.readyReplicas") == "3"
            and aimodel_field(cluster, "ai-model-sample", ".status.state") == "Running"
        ),
    )
    show(cluster, "get", "pods,deploy,aimodel")

    step("A worker reports an irreversible error (as the pod's ServiceAccount would)")
    report_as_worker(
        cluster, "ai-model-sample", "ConfigurationError", 'Local model "not-found-model" is not supported.'
    )
    wait("state Failed", lambda: aimodel_field(cluster, "ai-model-sample", ".status.state") == "Failed")
    show(cluster, "get", "aimodel")
    show(cluster, "describe", "aimodel", "ai-model-sample")

    step("Modifying the AIModel resets it to Running")
    show(cluster, "patch", "aimodel", "ai-model-sample", "--type=merge", "-p", '{"spec":{"maxProcessNum":128}}')
    wait("state Running", lambda: aimodel_field(cluster, "ai-model-sample", ".status.state") == "Running")
    show(cluster, "get", "aimodel")

    worker_health(cluster)
    hardware(cluster)

    admin = cluster.fact("pulsar_admin_url")
    with OpenAIStandIn(models=()) as api, EndpointStandIn() as gateway:
        one_request(cluster, api, gateway)
        autoscaling_loop(cluster, admin, api, gateway)

    step("Done. Keep exploring:")
    print(f"  export KUBECONFIG={cluster.kubeconfig}")
    print(f"  alias kubectl={cluster.kubectl_path()}")
    print("  kubectl get aimodel -A -o wide; kubectl apply -k config/samples/")
    print("  make cluster-status    # processes, memory, nodes (the operator's log is in .devcluster/logs/)")
    print(f"  Pulsar admin API: {admin}")
    print("  make cluster-down      # stops the operator, KEDA, Pulsar and the cluster", flush=True)


if __name__ == "__main__":
    try:
        main()
    except ClusterError as err:
        sys.exit(f"[devcluster] error: {err}")
