"""The whole autoscaling loop, for real: requests queued on Pulsar -> KEDA's scaler and metrics
adapter -> the HPA controller -> the Deployment's replicas -> the reference worker (aimodel-worker)
drains them, answering every request -> back down.

Real Pulsar standalone, the real KEDA operator and adapter (through the APIService), the real
HPA controller; the operator talks to the API server through a recording proxy so that its
writes to the Deployment can be counted. The worker runs as a local process with the
Deployment's environment and ServiceAccount token, against the stand-in OpenAI-style API and
gateway endpoint.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid

import pytest

from devcluster import pulsar as pulsar_mod
from faults.faultproxy import FaultProxy
from kube_helpers import wait_for

THRESHOLD = 2
QUEUED = 10  # -> ceil(10 / 2) = 5 workers


@pytest.fixture
def scaling_operator(recorded_operator, keda, pulsar, pulsar_token, pulsar_signing_key, broker, gateway):
    """The operator with Pulsar's admin and broker URLs, signing a token per model (workers get
    theirs, KEDA reads the backlog with a stats-only one through the TriggerAuthentication), and
    the stand-in gateway as the workers' answer endpoint, on a cluster running KEDA, behind a
    recording proxy."""
    env = {
        "PULSAR_ADMIN_URL": pulsar,
        "PULSAR_URL": broker,
        "PULSAR_ADMIN_TOKEN": pulsar_token,
        "PULSAR_TOKEN_SIGNING_KEY_FILE": pulsar_signing_key,
        "ANSWER_ENDPOINTS": gateway.url,
    }
    return recorded_operator(env)


@pytest.fixture
def queue(pulsar, pulsar_token, upstream) -> tuple[str, str, str]:
    """A model of its own and its workers' subscription on model-<model>: (model, topic, subscription)."""
    model = f"loop-{uuid.uuid4().hex[:8]}"
    upstream.models.add(model)
    topic, subscription = f"persistent/public/default/model-{model}", f"model-{model}-subscription"
    pulsar_mod.subscribe(pulsar, pulsar_token, topic, subscription)
    return model, topic, subscription


@pytest.fixture
def workers(kubectl, kubeconfig, namespace, tmp_path):
    """``workers.start()``: the reference worker, as a pod of the model's Deployment would run it."""
    from standins.kubelet import WorkerProcess, worker_environment

    started: list[WorkerProcess] = []

    class Workers:
        def start(self) -> WorkerProcess:
            env = worker_environment(kubectl, kubeconfig, namespace, "scaler", tmp_path)
            proc = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log").start()
            started.append(proc)
            return proc

    yield Workers()
    for proc in started:
        proc.stop()


def _requests(gateway, model: str, count: int) -> tuple[list[str], list[dict]]:
    pairs = [gateway.request(model, f"request {i}") for i in range(count)]
    return [rid for rid, _ in pairs], [msg for _, msg in pairs]


def _aimodel(model: str, upstream, **spec) -> dict:
    return {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {"name": "scaler"},
        "spec": {
            "type": "remote",
            "model": model,
            "baseURL": upstream.url,
            "apiKey": upstream.api_key,
            "image": "user/image:tag",
            "msgBacklogThreshold": THRESHOLD,
            "pollingInterval": 1,
            **spec,
        },
    }


def _replicas(k) -> int | None:
    dep = k.get("deployment", "scaler-deployment")
    return None if dep is None else dep["spec"].get("replicas")


def _ready(k) -> int:
    dep = k.get("deployment", "scaler-deployment") or {}
    return (dep.get("status") or {}).get("readyReplicas", 0)


def _hpa_row(k) -> dict[str, str]:
    """``kubectl get hpa`` as the user sees it: column -> value."""
    header, *rows = k("get", "hpa", "keda-hpa-scaler-scaledobject").splitlines()
    # TARGETS holds spaces ("10/2 (avg)"): split on the column starts of the header.
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return {header[s:e].strip(): rows[0][s:e].strip() for s, e in zip(starts, ends, strict=True)}


def _condition(k, type_: str) -> dict:
    model = k.get("aimodel", "scaler") or {}
    return next((c for c in (model.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def _deployment_writes(proxy: FaultProxy, namespace: str, since: float) -> list:
    prefix = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    return [r for r in proxy.writes(since) if r.path.startswith(prefix)]


def test_backlog_scales_the_workers_up_and_the_drain_scales_them_down(
    scaling_operator, pulsar, pulsar_token, queue, k, namespace, upstream, gateway, send_requests, workers
):
    op, proxy = scaling_operator
    model, topic, subscription = queue
    k.apply(_aimodel(model, upstream, maxReplicas=6, scaleDownStabilizationWindowSeconds=0))
    wait_for("the Deployment", lambda: _replicas(k) is not None, timeout=30)
    wait_for("KEDA's HPA", lambda: k.get("hpa", "keda-hpa-scaler-scaledobject"), timeout=60)
    # The HPA reads the real backlog through KEDA's metrics adapter: a value, not <unknown>.
    wait_for("the HPA to read an empty backlog", lambda: _hpa_row(k)["TARGETS"] == "0/2 (avg)", timeout=60)
    assert _replicas(k) == 1
    settled = time.monotonic()

    ids, messages = _requests(gateway, model, QUEUED)
    send_requests(f"persistent://{topic.split('/', 1)[1]}", messages)
    queued = time.monotonic()
    assert pulsar_mod.backlog(pulsar, pulsar_token, topic, subscription) == QUEUED
    # Per worker, as the HPA counts them: 10 queued over the replicas it has seen (1, or 5 already).
    row = wait_for(
        "the HPA to show the backlog",
        lambda: (r := _hpa_row(k)) and re.fullmatch(r"[1-9]\d*(\.\d+)?m?/2 \(avg\)", r["TARGETS"]) and r,
    )
    print(f"\nkubectl get hpa: TARGETS {row['TARGETS']!r} REPLICAS {row['REPLICAS']}")
    want = math.ceil(QUEUED / THRESHOLD)
    wait_for(f"{want} replicas", lambda: _replicas(k) == want, timeout=90)
    scaled_up = time.monotonic()
    wait_for(f"{want} Ready workers", lambda: _ready(k) == want, timeout=60)
    wait_for("the HPA to count them", lambda: _hpa_row(k)["TARGETS"] == "2/2 (avg)", timeout=30)
    hpa = k.get("hpa", "keda-hpa-scaler-scaledobject")
    metric = hpa["status"]["currentMetrics"][0]["external"]
    assert metric["metric"]["name"].startswith("s0-pulsar-")
    assert hpa["status"]["desiredReplicas"] == want
    # The HPA scaled the Deployment; the operator did not write to it meanwhile.
    assert _deployment_writes(proxy, namespace, settled) == []
    dep = k.json("get", "deployment", "scaler-deployment", "--show-managed-fields")
    replica_owners = [
        m["manager"] for m in dep["metadata"]["managedFields"] if '"f:replicas"' in json.dumps(m.get("fieldsV1"))
    ]
    assert replica_owners, "nobody owns spec.replicas?"
    assert "aimodel-operator" not in replica_owners, replica_owners

    # A spec change while scaled: a new template, the same replica count, one write by the operator.
    generation = dep["metadata"]["generation"]
    before = time.monotonic()
    k("patch", "aimodel", "scaler", "--type=merge", "-p", '{"spec":{"maxProcessNum":7}}')
    dep = wait_for(
        "the new template",
        lambda: (
            (d := k.get("deployment", "scaler-deployment"))
            and d["metadata"]["generation"] > generation
            and d["status"].get("observedGeneration") == d["metadata"]["generation"]
            and d
        ),
        timeout=30,
    )
    assert dep["spec"]["replicas"] == want
    # Had the operator set spec.replicas, the HPA would have had to set it back: one generation more.
    assert dep["metadata"]["generation"] == generation + 1
    assert len(_deployment_writes(proxy, namespace, before)) == 1

    # The reference worker drains the backlog, answering every request; the HPA scales back down.
    worker = workers.start()
    for rid in ids:
        assert gateway.answer(rid, timeout=60)["data"]["choices"][0]["message"]["content"].startswith("echo: request")
    wait_for("an empty backlog", lambda: pulsar_mod.backlog(pulsar, pulsar_token, topic, subscription) == 0, timeout=30)
    drained = time.monotonic()
    worker.stop()
    wait_for("1 replica (minReplicas)", lambda: _replicas(k) == 1, timeout=90)
    scaled_down = time.monotonic()
    print(
        f"first scale-up {scaled_up - queued:.1f}s after {QUEUED} requests were queued; "
        f"scaled down {scaled_down - drained:.1f}s after the drain; "
        f"operator writes to the Deployment while scaling: {len(_deployment_writes(proxy, namespace, settled)) - 1}"
        " (+1 for the spec change)"
    )
    assert len(_deployment_writes(proxy, namespace, settled)) == 1
    assert op.proc is not None and op.proc.poll() is None


def test_min_replicas_zero_sleeps_when_idle_and_wakes_on_the_first_request(
    scaling_operator, pulsar, pulsar_token, queue, k, namespace, upstream, gateway, send_requests, workers
):
    _op, proxy = scaling_operator
    model, topic, subscription = queue
    k.apply(_aimodel(model, upstream, minReplicas=0, cooldownPeriod=1))

    wait_for("KEDA to scale the idle model to zero", lambda: _replicas(k) == 0, timeout=90)
    mark = time.monotonic()
    ready = wait_for(
        "Ready=True ScaledToZero", lambda: (c := _condition(k, "Ready")) and c["reason"] == "ScaledToZero" and c
    )
    assert ready["status"] == "True"
    assert "KEDA starts a worker when a request is queued" in ready["message"]
    model_obj = k.get("aimodel", "scaler")
    assert model_obj["status"]["state"] == "Running"
    autoscaling = wait_for(
        "Autoscaling active=False", lambda: (c := _condition(k, "Autoscaling")) and "active=False" in c["message"] and c
    )
    assert autoscaling["status"] == "True"

    queued = time.monotonic()
    ids, messages = _requests(gateway, model, 1)
    send_requests(f"persistent://{topic.split('/', 1)[1]}", messages)
    wait_for("the first request to start a worker", lambda: (_replicas(k) or 0) >= 1, timeout=60)
    woke = time.monotonic()
    wait_for("Ready=True with a ready worker", lambda: _condition(k, "Ready").get("reason") == "WorkersReady")
    assert _condition(k, "Ready")["status"] == "True"

    # The worker KEDA woke answers it.
    worker = workers.start()
    assert gateway.answer(ids[0], timeout=60)["data"]["object"] == "chat.completion"
    wait_for("an empty backlog", lambda: pulsar_mod.backlog(pulsar, pulsar_token, topic, subscription) == 0, timeout=30)
    drained = time.monotonic()
    worker.stop()
    wait_for("back to zero after the cooldown", lambda: _replicas(k) == 0, timeout=90)
    slept = time.monotonic()
    print(f"\nwoke {woke - queued:.1f}s after the first request; back to zero {slept - drained:.1f}s after the drain")
    assert _deployment_writes(proxy, namespace, mark) == []
