"""The AIModel tells what is wrong with its workers: real pod, ReplicaSet and Deployment status,
driven by the real control plane and by kwok's fault stages (kwok.fault/* images), and recovery."""

from __future__ import annotations

import time

import pytest

from kube_helpers import wait_for

MODEL = "not-found-model"
CRASH_MESSAGE = f'ConfigurationError: Local model "{MODEL}" is not supported.'


def aimodel(image: str, replicas: int = 3) -> dict:
    return {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {"name": "w"},
        "spec": {"type": "local", "model": MODEL, "image": image, "replicas": replicas},
    }


def condition(k, type_: str) -> dict:
    model = k.get("aimodel", "w") or {}
    return next((c for c in (model.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def workers_reason(k, reason: str, timeout: float = 60) -> dict:
    return wait_for(
        f"WorkersAvailable {reason}",
        lambda: (c := condition(k, "WorkersAvailable")).get("reason") == reason and c,
        timeout=timeout,
    )


def events(k) -> list[tuple[str, str, str]]:
    items = k.json("get", "events", "--field-selector=involvedObject.kind=AIModel,involvedObject.name=w")["items"]
    return [(e["type"], e["reason"], e["message"]) for e in items]


def recovers(k) -> None:
    """A working image: the condition clears, Ready turns True, and an Event says so."""
    k("patch", "aimodel", "w", "--type=merge", "-p", '{"spec":{"image":"user/image:tag"}}')
    cond = workers_reason(k, "WorkersAvailable")
    assert cond["status"] == "True"
    assert condition(k, "Ready")["status"] == "True"
    wait_for("a WorkersRecovered Event", lambda: any(r == "WorkersRecovered" for _, r, _ in events(k)))


def test_a_crash_loop_shows_the_termination_message_without_a_stream_of_writes(recorded_operator, k, namespace):
    op, proxy = recorded_operator()
    k.apply(aimodel("kwok.fault/crashloop:1"))
    cond = workers_reason(k, "CrashLoopBackOff")
    assert cond["status"] == "False"
    assert cond["message"] == f"3/3 workers in CrashLoopBackOff (exit 1: {CRASH_MESSAGE})"
    ready = condition(k, "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "CrashLoopBackOff", cond["message"])
    # The state stays what the workers' reports make it (none here): Running.
    assert k.get("aimodel", "w")["status"]["state"] == "Running"
    assert ("Warning", "WorkersCrashLoopBackOff", cond["message"]) in events(k)
    row = k("get", "aimodel", "w", "-o", "wide")
    assert "3/3 workers in CrashLoopBackOff" in row

    # The pods restart every 10 s; the model's status does not follow each restart.
    def restarts() -> int:
        pods = k.json("get", "pods")["items"]
        return sum(cs["restartCount"] for p in pods for cs in p["status"]["containerStatuses"])

    before, window_start = restarts(), time.monotonic()
    wait_for("6 more restarts", lambda: restarts() >= before + 6, timeout=40, interval=1)
    window = time.monotonic() - window_start
    ours = f"/namespaces/{namespace}/"
    writes = [r for r in proxy.writes(window_start) if ours in r.path]
    print(f"\ncrash loop: {restarts() - before} restarts in {window:.0f}s, {len(writes)} operator writes")
    assert writes == []
    assert condition(k, "WorkersAvailable")["message"] == cond["message"]
    recovers(k)
    assert op.proc is not None and op.proc.poll() is None


def test_an_image_that_cannot_be_pulled(operator, k):
    k.apply(aimodel("kwok.fault/unpullable:1", replicas=1))
    cond = workers_reason(k, "ImagePullBackOff")
    assert cond["message"] == '1/1 workers in ImagePullBackOff (Back-off pulling image "kwok.fault/unpullable:1")'
    assert condition(k, "Ready")["reason"] == "ImagePullBackOff"
    wait_for("a WorkersImagePullBackOff Event", lambda: any(r == "WorkersImagePullBackOff" for _, r, _ in events(k)))
    recovers(k)


@pytest.fixture
def tainted_nodes(kubectl):
    """Every node tainted NoSchedule (nothing tolerates it): new pods cannot be scheduled."""
    nodes = [n["metadata"]["name"] for n in kubectl.json("get", "nodes")["items"]]
    for node in nodes:
        kubectl("taint", "nodes", node, "devcluster/test=unschedulable:NoSchedule", "--overwrite")
    try:
        yield nodes
    finally:
        for node in nodes:
            kubectl.run("taint", "nodes", node, "devcluster/test-", check=False)


def test_unschedulable_workers_show_the_schedulers_message(operator, k, kubectl, tainted_nodes):
    k.apply(aimodel("user/image:tag", replicas=2))
    cond = workers_reason(k, "Unschedulable")
    assert cond["message"].startswith("2/2 workers Unschedulable (0/4 nodes are available: ")
    assert "untolerated taint" in cond["message"]
    for node in tainted_nodes:
        kubectl("taint", "nodes", node, "devcluster/test-")
    cond = workers_reason(k, "WorkersAvailable")
    assert cond["message"] == "2/2 workers available"
    wait_for("a WorkersRecovered Event", lambda: any(r == "WorkersRecovered" for _, r, _ in events(k)))


def test_a_deployment_refused_by_a_resource_quota(operator, k, namespace):
    k.apply(
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pods"}, "spec": {"hard": {"pods": "1"}}}
    )
    wait_for("the quota to be counted", lambda: (k.get("resourcequota", "pods").get("status") or {}).get("hard"))
    k.apply(aimodel("user/image:tag", replicas=2))
    cond = workers_reason(k, "FailedCreate")
    assert cond["message"].startswith("workers cannot be created: pods ")
    assert "exceeded quota: pods" in cond["message"]
    assert condition(k, "Ready")["reason"] == "FailedCreate"
    # Room for both: the ReplicaSet controller creates the second pod on its next try.
    k("patch", "resourcequota", "pods", "--type=merge", "-p", '{"spec":{"hard":{"pods":"5"}}}')
    cond = workers_reason(k, "WorkersAvailable", timeout=120)
    assert cond["message"] == "2/2 workers available"
    wait_for("a WorkersRecovered Event", lambda: any(r == "WorkersRecovered" for _, r, _ in events(k)))
