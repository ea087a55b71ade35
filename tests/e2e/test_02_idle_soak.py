"""An idle cluster stays healthy, as a real one does: nodes keep their leases, pods stay Ready,
and neither the control plane nor the operator rewrites anything."""

from __future__ import annotations

import datetime as dt
import time

from kube_helpers import wait_for

MODELS = 3
REPLICAS = 3
SOAK_SECONDS = 120


def _pods_ready(k) -> tuple[int, int]:
    pods = k.json("get", "pods")["items"]
    ready = sum(
        1
        for p in pods
        if any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions", []))
    )
    return ready, len(pods)


def _node_not_ready_since(kubectl, since: dt.datetime) -> list[str]:
    events = kubectl.json("get", "events", "-A", "--field-selector=reason=NodeNotReady")["items"]
    out = []
    for e in events:
        stamp = e.get("lastTimestamp") or e.get("eventTime") or e["metadata"]["creationTimestamp"]
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        if when >= since:
            out.append(f"{e['involvedObject']['name']} at {stamp}")
    return out


def test_idle_cluster_keeps_nodes_and_pods_ready_and_writes_nothing(recorded_operator, kubectl, k, namespace):
    op, proxy = recorded_operator()
    for i in range(MODELS):
        k.apply(
            {
                "apiVersion": "model.youxam.com/v1alpha1",
                "kind": "AIModel",
                "metadata": {"name": f"idle-{i}"},
                "spec": {"type": "local", "model": f"idle-{i}", "image": "user/image:tag", "replicas": REPLICAS},
            }
        )
    for i in range(MODELS):
        k("wait", "--for=condition=Ready", f"aimodel/idle-{i}", "--timeout=60s")
    wait_for("every pod Ready", lambda: _pods_ready(k) == (MODELS * REPLICAS, MODELS * REPLICAS), timeout=60)
    # Nodes heartbeat through Leases, as kubelets do.
    leases = kubectl.json("get", "leases", "-n", "kube-node-lease")["items"]
    assert {lease["metadata"]["name"] for lease in leases} >= {"kwok-node-0", "kwok-node-1"}
    # The operator's batched status writes (replica counts) have landed once every AIModel shows
    # what its Deployment says: from then on it has nothing left to write.
    wait_for(
        "the AIModels to show every worker ready",
        lambda: all(
            (st := k.get("aimodel", f"idle-{i}").get("status") or {}).get("readyReplicas") == REPLICAS
            and st.get("replicas") == REPLICAS
            for i in range(MODELS)
        ),
        timeout=60,
    )

    since = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = time.monotonic()
    versions = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in k.json("get", "deployments")["items"]}
    models = {m["metadata"]["name"]: m["metadata"]["resourceVersion"] for m in k.json("get", "aimodels")["items"]}
    samples = 0
    while time.monotonic() - start < SOAK_SECONDS:
        assert _pods_ready(k) == (MODELS * REPLICAS, MODELS * REPLICAS), "a pod lost readiness"
        assert _node_not_ready_since(kubectl, since) == []
        samples += 1
        time.sleep(2)
    ours = f"/namespaces/{namespace}/"
    writes = [f"{r.method} {r.path}" for r in proxy.writes(start) if ours in r.path]
    print(f"\nidle {SOAK_SECONDS}s, {samples} samples: NodeNotReady events 0, operator writes {len(writes)}")
    assert writes == []
    assert _node_not_ready_since(kubectl, since) == []
    # Nothing rewrote the Deployments' statuses or the AIModels.
    assert {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in k.json("get", "deployments")["items"]} == (
        versions
    )
    assert {
        m["metadata"]["name"]: m["metadata"]["resourceVersion"] for m in k.json("get", "aimodels")["items"]
    } == models
    assert op.proc is not None and op.proc.poll() is None
