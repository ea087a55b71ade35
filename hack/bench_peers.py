"""The error path as an outside harness measures it, this operator and the Go original side by side.

Part of `make bench` (hack/bench.py). In each round, for each operator in turn (the order
alternates between rounds), on the same cluster with only that operator running, with its
defaults:

- ``after_running``: 20 AIModels with ``replicas: 1`` created one at a time; as soon as all show
  ``Running`` (their pods still starting), for each model a watch on AIModels is opened and a
  Warning Event is created as a worker creates it (``generateName``, ``involvedObject``,
  ``source.component``); the time from the create request until that watch shows ``Failed``.
- ``after_quiet``: the same with 20 more models, 30 s after all show ``Running``.

Then, for each operator, 1000 AIModels with one worker pod each (kwok) created at once: its
resident memory once every Deployment has its ready worker and the operator's CPU is idle.

The Go original runs only when built into .peers/ (`make peers`, docs/benchmarks.md); it is never
part of the repository or of `make test`. Without it, this operator is measured alone.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Protocol

import bench
from aimodel_operator.kube import AIMODELS, DEPLOYMENTS, EVENTS, Kube
from devcluster.cluster import Cluster

MODELS = 20
QUIET = 30.0
ROUNDS = 3
MEMORY_MODELS = 1000


class Peer(Protocol):
    peak_mib: float

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def rss_mib(self) -> float: ...
    def cpu_seconds(self) -> float: ...


def worker_event(name: str, ns: str) -> dict:
    """A Warning Event as the reference worker creates it."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}-", "namespace": ns},
        "involvedObject": {"kind": "AIModel", "namespace": ns, "name": name},
        "source": {"component": "aimodel-worker"},
        "reason": "GeneralError",
        "message": "bench: a worker's error",
        "type": "Warning",
    }


async def report(kube: Kube, ns: str, name: str, creates: list[float] | None = None) -> float:
    """Milliseconds from the Event's create request until a watch opened before it shows Failed
    (and the create's own milliseconds appended to ``creates``)."""

    def failed(_t: str, obj: dict) -> bool:
        return obj["metadata"]["name"] == name and (obj.get("status") or {}).get("state") == "Failed"

    listed = asyncio.Event()
    watcher = asyncio.create_task(bench.watch_until(kube, AIMODELS, ns, failed, 30, listed))
    await listed.wait()
    t0 = time.monotonic()
    await kube.create(EVENTS, ns, worker_event(name, ns))
    if creates is not None:
        creates.append((time.monotonic() - t0) * 1000)
    await watcher
    return (time.monotonic() - t0) * 1000


async def all_running(kube: Kube, ns: str, names: list[str]) -> None:
    """Create the models one at a time; return as soon as every one shows Running."""
    running: set[str] = set()

    def on_model(_t: str, obj: dict) -> bool:
        if (obj.get("status") or {}).get("state") == "Running":
            running.add(obj["metadata"]["name"])
        return running >= set(names)

    listed = asyncio.Event()
    watcher = asyncio.create_task(bench.watch_until(kube, AIMODELS, ns, on_model, 300, listed))
    await listed.wait()
    for name in names:
        await kube.create(AIMODELS, ns, bench.model(name, ns, 1))
    await watcher


def report_parts(peer: object) -> dict[str, float]:
    """This operator's own part of its reports so far (metrics.REPORT_SECONDS): sums and counts."""
    metric = getattr(peer, "metric", None)
    if metric is None or not hasattr(peer, "reconciled"):
        return {}
    return {k: v for k, v in metric("aimodel_operator_report_seconds_").items() if "_sum{" in k or "_count{" in k}


def mean_ms(before: dict[str, float], after: dict[str, float], part: str) -> float | None:
    total = after.get(f'aimodel_operator_report_seconds_sum{{part="{part}"}}', 0.0) - before.get(
        f'aimodel_operator_report_seconds_sum{{part="{part}"}}', 0.0
    )
    count = after.get(f'aimodel_operator_report_seconds_count{{part="{part}"}}', 0.0) - before.get(
        f'aimodel_operator_report_seconds_count{{part="{part}"}}', 0.0
    )
    return round(total / count * 1000, 3) if count else None


async def conditions(
    kube: Kube, tag: str, quiet: float = QUIET, models: int = MODELS, peer: object = None
) -> dict[str, list[float]]:
    """Both conditions, each on 20 models of its own: the reports' milliseconds (and, for this
    operator, the mean of its own part: queued until its write is sent, and the write)."""
    out: dict[str, list[float]] = {}
    for condition, wait in (("after_running", 0.0), ("after_quiet", quiet)):
        ns = f"peers-{tag}-{condition.replace('_', '-')}"
        await bench.namespace(kube, ns)
        names = [f"p{i}" for i in range(models)]
        await all_running(kube, ns, names)
        if wait:
            await asyncio.sleep(wait)  # the quiet spell is the condition measured
        creates: list[float] = []
        before = report_parts(peer)
        out[condition] = [await report(kube, ns, name, creates) for name in names]
        out[f"{condition}_create"] = creates
        if before:
            after = report_parts(peer)
            out[f"{condition}_operator"] = [
                mean_ms(before, after, "queued") or 0.0,
                mean_ms(before, after, "written") or 0.0,
            ]
    return out


async def drop_namespaces(kube: Kube, prefix: str, timeout: float = 900) -> None:
    """Delete the namespaces named ``prefix*`` and wait until they are gone (the next operator
    must not find another's models)."""
    listing = await kube.request("GET", bench.NAMESPACES.path(None))
    names = [n["metadata"]["name"] for n in listing["items"] if n["metadata"]["name"].startswith(prefix)]
    for name in names:
        await kube.request("DELETE", f"/api/v1/namespaces/{name}")
    deadline = time.monotonic() + timeout
    for name in names:
        while await kube.get(bench.NAMESPACES, None, name) is not None:
            if time.monotonic() > deadline:
                raise SystemExit(f"namespace {name} not deleted within {timeout} s")
            await asyncio.sleep(0.5)


async def idle_cpu(peer: Peer, quiet: float = 3.0, timeout: float = 300) -> None:
    """Wait until the peer used no CPU for ``quiet`` seconds (both operators: no metrics needed)."""
    deadline = time.monotonic() + timeout
    last, since = peer.cpu_seconds(), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = peer.cpu_seconds()
        if now - last > 0.02:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


async def memory_with_pods(kube: Kube, peer: Peer, n: int = MEMORY_MODELS) -> dict:
    """The peer's resident memory with ``n`` AIModels, each with one ready worker pod."""
    ns = "peers-memory"
    await bench.namespace(kube, ns)
    ready: set[str] = set()

    def on_deployment(_t: str, obj: dict) -> bool:
        if (obj.get("status") or {}).get("readyReplicas") == 1:
            ready.add(obj["metadata"]["name"])
        return len(ready) >= n

    start = time.monotonic()
    watcher = asyncio.create_task(bench.watch_until(kube, DEPLOYMENTS, ns, on_deployment, 900))
    await bench.gather_limited(64, (kube.create(AIMODELS, ns, bench.model(f"m{i}", ns, 1)) for i in range(n)))
    await watcher
    seconds = time.monotonic() - start
    await idle_cpu(peer)
    return {"rss_mib": peer.rss_mib(), "peak_mib": peer.peak_mib, "seconds_until_ready": seconds}


def p50s(rounds: list[dict[str, list[float]]], condition: str) -> list[float]:
    return [round(statistics.median(r[condition]), 2) for r in rounds]


async def side_by_side(
    kube: Kube, cluster: Cluster, peers: dict[str, Callable[[], Peer]], memory_models: int = MEMORY_MODELS
) -> dict:
    """Three rounds of both conditions for every peer, alternating; then memory with pods (unless 0 models)."""
    rounds: dict[str, list[dict[str, list[float]]]] = {name: [] for name in peers}
    order = list(peers)
    for r in range(ROUNDS):
        for name in order if r % 2 == 0 else order[::-1]:
            print(f"  round {r + 1}: {name} ...", flush=True)
            peer = peers[name]()
            peer.start()
            try:
                rounds[name].append(await conditions(kube, f"{r}-{name}", peer=peer))
            finally:
                peer.stop()
            await drop_namespaces(kube, "peers-")
    out: dict = {}
    for name in peers:
        out[name] = {
            "after_running_ms_p50_per_round": p50s(rounds[name], "after_running"),
            "after_quiet_ms_p50_per_round": p50s(rounds[name], "after_quiet"),
            "after_running_ms_p50": statistics.median(x for r in rounds[name] for x in r["after_running"]),
            "after_quiet_ms_p50": statistics.median(x for r in rounds[name] for x in r["after_quiet"]),
            # Of those, the Event's create alone: the rest is the operator's part and two watch deliveries.
            "after_running_create_ms_p50": statistics.median(
                x for r in rounds[name] for x in r["after_running_create"]
            ),
            "after_quiet_create_ms_p50": statistics.median(x for r in rounds[name] for x in r["after_quiet_create"]),
        }
        if "after_running_operator" in rounds[name][0]:
            # This operator's own part, per round: [queued, written] mean milliseconds.
            out[name]["after_running_operator_ms"] = [r["after_running_operator"] for r in rounds[name]]
            out[name]["after_quiet_operator_ms"] = [r["after_quiet_operator"] for r in rounds[name]]
    for name in order if memory_models else ():
        print(f"  {memory_models} models with a worker pod each: {name} ...", flush=True)
        peer = peers[name]()
        peer.start()
        try:
            out[name]["memory"] = await memory_with_pods(kube, peer, memory_models)
        finally:
            peer.stop()
        await drop_namespaces(kube, "peers-")
    return out
