"""`make bench`: the operator's performance on the local cluster, measured.

Starts a throwaway local cluster in .devcluster-bench/ and the operator as a
real process, then measures:

- latency from an AIModel's create request to its Deployment existing (p50, p90),
- latency from a worker's Warning event to the AIModel showing Failed (p50, p90),
  and for one report after 95 s in which the operator sent nothing (its connections kept?),
  and the same with a minimal reporter in place of the operator (the floor: the
  Event's create and one status write, each with its watch delivery),
- N AIModels created at once: time until all converged, against the time the
  same API writes take when sent directly (no operator), and their ratio,
- API writes per new AIModel (Events for humans counted apart),
- the operator's resident memory with N AIModels,
- API writes while nothing changes, and after a restart,
- the operator's resident memory once every model runs 3 worker pods (its pod cache),
- the operator's writes per minute for a model whose 3 pods crash-loop,
- a node failure: kwok (which plays both nodes) is killed, the node lifecycle
  controller marks every worker pod not Ready, and the N models' statuses
  follow: the operator's status writes per second (bounded by
  --status-writes-per-second), and workers' reports -> Failed meanwhile, each
  followed by one to the floor reporter on a copy of the CRD the operator does
  not serve (what the API server, busy with the storm, lets any reporter do).

A report's time is also split: of its milliseconds, the Event's create alone.

First, after the floor: the error path as an outside harness measures it (reports just after the
models show Running, and after 30 s of quiet) and memory with 1000 models and a worker pod each,
three rounds, side by side with the Go original when it is built into .peers/ (hack/bench_peers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple

from aimodel_operator import api, builders
from aimodel_operator import crd as crd_mod
from aimodel_operator.intake import FIELD_SELECTOR
from aimodel_operator.kube import AIMODELS, DEPLOYMENTS, EVENTS, Kube, Resource, load_configuration
from aimodel_operator.settings import Settings
from devcluster.cluster import Cluster, free_port

REPO = Path(__file__).resolve().parents[1]
NAMESPACES = Resource("", "v1", "namespaces", "Namespace")
# The AIModel CRD again under a group of its own, which the operator does not serve: the floor
# reporter writes these while the operator runs (a node failure), on the same schema.
FLOOR_GROUP = "floor.bench"
FLOOR_MODELS = Resource(FLOOR_GROUP, api.VERSION, api.PLURAL, api.KIND)


def floor_crd() -> dict:
    crd = crd_mod.crd()
    crd["metadata"]["name"] = f"{api.PLURAL}.{FLOOR_GROUP}"
    crd["spec"]["group"] = FLOOR_GROUP
    return crd


def model(name: str, namespace: str, replicas: int) -> dict:
    return {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {"name": name, "namespace": namespace},
        # A model name of its own: a name held in another namespace would get no workers (ModelNameInUse).
        "spec": {"type": "local", "model": f"{namespace}-{name}", "image": "user/image:tag", "replicas": replicas},
    }


POD_PHASES_UP_TO = 2000
RESYNC_SECONDS = 30


class Operator:
    def __init__(self, cluster: Cluster, resync: int | None = None, env: dict[str, str] | None = None) -> None:
        """``resync``: --resync in seconds (this benchmark's short one), None for the default;
        ``env``: more environment (a variant measured side by side, --variant)."""
        self.cluster = cluster
        self.resync = resync
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.metrics_port = 0
        # The highest resident memory seen, sampled every 0.1 s by a thread, across restarts.
        self.peak_mib = 0.0
        self._sampler: threading.Thread | None = None

    def _sample(self, proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_mib = max(self.peak_mib, int(line.split()[1]) / 1024)
            except OSError:
                return
            time.sleep(0.1)

    def start(self) -> None:
        health, self.metrics_port = free_port(), free_port()
        log = open(self.cluster.dir / "operator.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aimodel_operator",
                "run",
                f"--health-port={health}",
                f"--metrics-port={self.metrics_port}",
                *([f"--resync={self.resync}"] if self.resync else []),
            ],
            env={**os.environ, **self.env, "KUBECONFIG": str(self.cluster.kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._sampler = threading.Thread(target=self._sample, args=(self.proc,), daemon=True)
        self._sampler.start()
        deadline = time.monotonic() + 120
        # Serving means caches synced: /readyz (an operator without it answers 404 there: /healthz).
        path = "/readyz"
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{health}{path}", timeout=1).status == 200:
                    return
            except urllib.error.HTTPError as err:
                if err.code == 404:
                    path = "/healthz"
                time.sleep(0.05)
            except OSError:
                time.sleep(0.05)
        raise SystemExit("operator did not become ready")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None

    def metric(self, prefix: str) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith(prefix):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def writes(self) -> tuple[float, float]:
        """(writes that make models converge, Events posted)."""
        rows = self.metric("aimodel_operator_api_writes_total{")
        events = sum(v for k, v in rows.items() if 'resource="events"' in k)
        return sum(rows.values()) - events, events

    def reconciled(self) -> float:
        return self.metric('aimodel_operator_reconciles_total{result="ok"}').get(
            'aimodel_operator_reconciles_total{result="ok"}', 0
        )

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


async def gather_limited(limit: int, coros) -> list:
    sem = asyncio.Semaphore(limit)

    async def one(coro):
        async with sem:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def namespace(kube: Kube, name: str) -> None:
    await kube.create(NAMESPACES, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


async def watch_until(
    kube: Kube, res: Resource, ns: str, done, timeout: float = 600, listed: asyncio.Event | None = None
) -> None:
    """Follow ``res`` in ``ns``, calling ``done(type, obj)`` until it returns True.

    ``listed`` is set once the watch is open (the API server has answered it): a latency measured
    from then on does not include the watch's own setup racing the request being measured.
    """
    listing = await kube.request("GET", res.path(ns))
    for item in listing["items"]:
        if done("ADDED", item):
            if listed is not None:
                listed.set()
            return
    rv = listing["metadata"]["resourceVersion"]
    deadline = time.monotonic() + timeout
    opened = listed.set if listed is not None else None
    while time.monotonic() < deadline:
        async for event in kube.watch(res, rv, namespace=ns, opened=opened):
            if event["type"] == "BOOKMARK":
                rv = event["object"]["metadata"]["resourceVersion"]
                continue
            rv = event["object"]["metadata"]["resourceVersion"]
            if done(event["type"], event["object"]):
                return
    raise SystemExit(f"timed out watching {res.plural} in {ns}")


async def bare_writes(kube: Kube, n: int, settings: Settings) -> float:
    """What converging N models costs without an operator: create them, write every child and a status."""
    ns = "bench-bare"
    await namespace(kube, ns)
    start = time.monotonic()

    async def one(i: int) -> None:
        created = await kube.create(AIMODELS, ns, model(f"m{i}", ns, 0))
        children = builders.children(created, settings, builders.Capabilities())
        await asyncio.gather(*(kube.apply(c) for c in children))
        status = {"state": "Running", "message": "bare", "observedGeneration": 1}
        body = {
            "apiVersion": created["apiVersion"],
            "kind": "AIModel",
            "metadata": {"name": f"m{i}", "namespace": ns},
            "status": status,
        }
        await kube.apply(body, AIMODELS, subresource="status")

    await gather_limited(64, (one(i) for i in range(n)))
    return time.monotonic() - start


async def bulk(kube: Kube, op: Operator, n: int) -> dict:
    ns = "bench-bulk"
    await namespace(kube, ns)
    writes0, events0 = op.writes()
    cpu0 = op.cpu_seconds()
    converged: set[str] = set()
    deployments: set[str] = set()

    def on_model(_type: str, obj: dict) -> bool:
        if (obj.get("status") or {}).get("observedGeneration") == 1:
            converged.add(obj["metadata"]["name"])
        return len(converged) >= n and len(deployments) >= n

    def on_deployment(_type: str, obj: dict) -> bool:
        deployments.add(obj["metadata"]["name"])
        return len(deployments) >= n

    start = time.monotonic()
    watch_models = asyncio.create_task(watch_until(kube, AIMODELS, ns, on_model))
    watch_deps = asyncio.create_task(watch_until(kube, DEPLOYMENTS, ns, on_deployment))
    await gather_limited(64, (kube.create(AIMODELS, ns, model(f"m{i}", ns, 0)) for i in range(n)))
    await watch_deps
    await watch_models
    elapsed = time.monotonic() - start
    cpu = op.cpu_seconds() - cpu0
    # Writes are counted once every model is Ready (the Deployment controller has seen its
    # Deployment) and the operator has been quiet for a while: the whole cost of a new model.
    ready: set[str] = set()

    def on_ready(_type: str, obj: dict) -> bool:
        conds = (obj.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            ready.add(obj["metadata"]["name"])
        return len(ready) >= n

    await watch_until(kube, AIMODELS, ns, on_ready)
    await settle(op)
    writes, events = op.writes()
    return {
        "seconds": elapsed,
        "operator_cpu_seconds": cpu,
        "writes_per_model": (writes - writes0) / n,
        "events_per_model": (events - events0) / n,
        "rss_mib": op.rss_mib(),
    }


async def settle(op: Operator, quiet: float = 3.0, timeout: float = 120) -> None:
    """Wait until the operator has written nothing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = op.writes(), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = op.writes()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 1 else values[0]


def report_event(name: str, ns: str, message: str = "bench") -> dict:
    """A Warning event as a worker sends it."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": ns},
        "involvedObject": {"kind": "AIModel", "name": name, "namespace": ns},
        "reason": "GeneralError",
        "message": message,
        "type": "Warning",
    }


class Timed(NamedTuple):
    """A report's milliseconds: until the AIModel showed Failed, and of that the Event's create alone."""

    total: float
    create: float


async def report_ms(kube: Kube, ns: str, name: str, message: str = "bench", res: Resource = AIMODELS) -> Timed:
    """Send a worker's report on ``name`` (a ``res``); milliseconds from its create request until
    it shows Failed, timed once the observing watch is open."""

    def failed(_t: str, obj: dict) -> bool:
        return obj["metadata"]["name"] == name and (obj.get("status") or {}).get("state") == "Failed"

    listed = asyncio.Event()
    watcher = asyncio.create_task(watch_until(kube, res, ns, failed, 30, listed))
    await listed.wait()
    event = report_event(name, ns, message)
    if res is not AIMODELS:
        # As the reference worker does, reports on AIModels name no apiVersion; the floor's copy needs it.
        event["involvedObject"]["apiVersion"] = res.api_version
    t0 = time.monotonic()
    await kube.create(EVENTS, ns, event)
    created = time.monotonic()
    await watcher
    return Timed((time.monotonic() - t0) * 1000, (created - t0) * 1000)


async def floor_reporter(ns: str, res: Resource = AIMODELS) -> None:
    """The least any operator must do for a report, as its own process: watch the Warning events
    naming an AIModel and write that model's status. No caches, no checks, nothing else running."""
    kube = Kube(await load_configuration())
    rv = (await kube.request("GET", EVENTS.path(ns)))["metadata"]["resourceVersion"]

    def opened() -> None:
        print("watching", flush=True)

    while True:
        async for event in kube.watch(EVENTS, rv, namespace=ns, opened=opened, query={"fieldSelector": FIELD_SELECTOR}):
            obj = event["object"]
            rv = obj["metadata"]["resourceVersion"]
            if event["type"] != "ADDED":
                continue
            name = obj["involvedObject"]["name"]
            body = {
                "apiVersion": res.api_version,
                "kind": "AIModel",
                "metadata": {"name": name, "namespace": ns},
                "status": {"state": "Failed", "message": obj["message"]},
            }
            await kube.request(
                "PATCH",
                res.path(ns, name, "status"),
                body=body,
                query={"fieldManager": "bench-floor", "force": "true"},
                content_type="application/apply-patch+yaml",
            )


@asynccontextmanager
async def floor_running(ns: str, res: Resource) -> AsyncIterator[None]:
    """The floor reporter, as its own process, for the ``res`` objects in ``ns``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--floor-reporter", ns, "--floor-group", res.group, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"watching":
            raise SystemExit(f"floor reporter did not start: {line!r}")
        yield
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def report_floor(kube: Kube, samples: int) -> dict:
    """Worker error -> Failed with the floor reporter in place of the operator (operator not running):
    the Event's create, its watch delivery, one status write and its watch delivery, on this machine.
    The models are created first (their creation is not measured), and deleted at the end: the
    operator, started next, must not spend its first seconds on them."""
    ns = "bench-floor"
    await namespace(kube, ns)
    await gather_limited(8, (kube.create(AIMODELS, ns, model(f"f{i}", ns, 0)) for i in range(samples)))
    async with floor_running(ns, AIMODELS):
        timed = [await report_ms(kube, ns, f"f{i}") for i in range(samples)]
    await kube.request("DELETE", f"/api/v1/namespaces/{ns}")
    deadline = time.monotonic() + 120
    while await kube.get(NAMESPACES, None, ns) is not None:
        if time.monotonic() > deadline:
            raise SystemExit(f"namespace {ns} not deleted")
        await asyncio.sleep(0.2)
    failed_ms = [t.total for t in timed]
    return {
        "failed_floor_ms_p50": statistics.median(failed_ms),
        "failed_floor_ms_p90": pct(failed_ms, 90),
        "failed_floor_event_create_ms_p50": statistics.median(t.create for t in timed),
    }


async def latencies(kube: Kube, op: Operator, samples: int) -> dict:
    ns = "bench-latency"
    await namespace(kube, ns)
    create_ms: list[float] = []
    timed: list[Timed] = []
    for i in range(samples):
        name = f"l{i}"
        seen = asyncio.Event()

        def has_deployment(_t: str, obj: dict, name=name, seen=seen) -> bool:
            if obj["metadata"]["name"] == f"{name}-deployment":
                seen.set()
            return seen.is_set()

        listed = asyncio.Event()
        watcher = asyncio.create_task(watch_until(kube, DEPLOYMENTS, ns, has_deployment, 30, listed))
        await listed.wait()
        t0 = time.monotonic()
        await kube.create(AIMODELS, ns, model(name, ns, 1))
        await watcher
        create_ms.append((time.monotonic() - t0) * 1000)
        # One model at a time: the next create does not race this one's start (its pod scheduled
        # and started, the Deployment's and the AIModel's status written).
        await watch_until(
            kube,
            AIMODELS,
            ns,
            lambda _t, o, name=name: (
                o["metadata"]["name"] == name and (o.get("status") or {}).get("readyReplicas") == 1
            ),
        )

    # A worker reports from a running pod, usually long after it started: the operator is quiet.
    await settle(op)
    for i in range(samples):
        events = op.writes()[1]
        timed.append(await report_ms(kube, ns, f"l{i}"))
        # Reports are independent: the next one does not race this one's Event for humans
        # (StateFailed), posted once the status is written.
        deadline = time.monotonic() + 10
        while op.writes()[1] <= events and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    failed_ms = [t.total for t in timed]
    return {
        "deployment_ms_p50": statistics.median(create_ms),
        "deployment_ms_p90": pct(create_ms, 90),
        "failed_ms_p50": statistics.median(failed_ms),
        "failed_ms_p90": pct(failed_ms, 90),
        "failed_event_create_ms_p50": statistics.median(t.create for t in timed),
    }


async def with_pods(kube: Kube, op: Operator, n: int, replicas: int = 3) -> dict:
    """Every bulk model scaled to ``replicas`` worker pods (simulated by kwok): memory with the pod cache."""
    ns = "bench-bulk"
    ready: set[str] = set()

    def on_model(_type: str, obj: dict) -> bool:
        status = obj.get("status") or {}
        if status.get("readyReplicas") == replicas and status.get("observedGeneration") == 2:
            ready.add(obj["metadata"]["name"])
        return len(ready) >= n

    start = time.monotonic()
    watcher = asyncio.create_task(watch_until(kube, AIMODELS, ns, on_model, timeout=900))
    patch = {"spec": {"replicas": replicas}}
    await gather_limited(
        32,
        (
            kube.request("PATCH", AIMODELS.path(ns, f"m{i}"), patch, content_type="application/merge-patch+json")
            for i in range(n)
        ),
    )
    await watcher
    elapsed = time.monotonic() - start
    await settle(op)
    return {"pods": n * replicas, "seconds": elapsed, "rss_mib": op.rss_mib()}


async def crash_loop(kube: Kube, op: Operator, seconds: float = 60) -> dict:
    """Operator writes while one model's 3 pods crash-loop (kwok restarts each every 10 s)."""
    ns = "bench-crash"
    await namespace(kube, ns)
    crashing = model("crash", ns, 3)
    crashing["spec"]["image"] = "kwok.fault/crashloop:1"
    await kube.create(AIMODELS, ns, crashing)

    def shown(_type: str, obj: dict) -> bool:
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(c["type"] == "WorkersAvailable" and c["message"].startswith("3/3 workers in Crash") for c in conds)

    await watch_until(kube, AIMODELS, ns, shown, timeout=120)
    await settle(op)
    restarts_before = await _restarts(kube, ns)
    writes = await idle_writes(op, seconds)
    restarts = await _restarts(kube, ns) - restarts_before
    return {"seconds": seconds, "pod_restarts": restarts, "writes": sum(writes.values())}


# Reports sent during the node failure, each followed by one to the floor reporter, this far apart.
STORM_REPORTS = 20
STORM_REPORT_SPACING = 0.5


async def node_failure(kube: Kube, op: Operator, cluster: Cluster, n: int) -> dict:
    """Kill kwok; once the nodes' leases lapse every pod turns not Ready. Operator writes per second
    while the N bulk models follow; and meanwhile workers' reports, each followed by one to the floor
    reporter (on the CRD's copy, which the operator ignores): what the API server, busy with the
    storm, lets any reporter do."""
    ns, latency_ns, floor_ns = "bench-bulk", "bench-latency", "bench-storm-floor"
    await namespace(kube, floor_ns)
    for i in range(STORM_REPORTS):
        await kube.create(AIMODELS, latency_ns, model(f"storm{i}", latency_ns, 0))
        floor_model = model(f"f{i}", floor_ns, 0)
        floor_model["apiVersion"] = FLOOR_MODELS.api_version
        await kube.create(FLOOR_MODELS, floor_ns, floor_model)
    await watch_until(
        kube,
        AIMODELS,
        latency_ns,
        lambda _t, o: o["metadata"]["name"] == f"storm{STORM_REPORTS - 1}" and "status" in o,
    )
    await settle(op)
    flipped: dict[str, float] = {}
    first_flip = asyncio.Event()

    def on_model(_type: str, obj: dict) -> bool:
        if (obj.get("status") or {}).get("readyReplicas", 0) == 0 and obj["metadata"]["name"] not in flipped:
            flipped[obj["metadata"]["name"]] = time.monotonic()
            first_flip.set()
        return len(flipped) >= n

    listed = asyncio.Event()
    watcher = asyncio.create_task(watch_until(kube, AIMODELS, ns, on_model, timeout=300, listed=listed))
    await listed.wait()
    samples: list[tuple[float, float]] = []

    async def sample() -> None:
        while True:
            samples.append((time.monotonic(), op.writes()[0]))
            await asyncio.sleep(0.25)

    ours: list[Timed] = []
    floor: list[Timed] = []
    async with floor_running(floor_ns, FLOOR_MODELS):
        sampler = asyncio.create_task(sample())
        killed = time.monotonic()
        cluster.kill_component("kwok")
        try:
            await first_flip.wait()
            storm = time.monotonic()
            for i in range(STORM_REPORTS):
                if watcher.done():
                    break
                ours.append(await report_ms(kube, latency_ns, f"storm{i}", "bench: a report during the storm"))
                floor.append(await report_ms(kube, floor_ns, f"f{i}", "bench: the floor", FLOOR_MODELS))
                await asyncio.sleep(STORM_REPORT_SPACING)  # spreads the reports over the storm
            await watcher
            done = time.monotonic()
            await settle(op)
        finally:
            sampler.cancel()
            cluster.restart_component("kwok")
    # Writes per second over sliding 1 s windows, from the first flip until quiet.
    window = [(t, w) for t, w in samples if t >= storm - 0.25]
    per_second = [
        later[1] - w for i, (t, w) in enumerate(window) for later in window[i:] if 0.99 <= later[0] - t <= 1.26
    ]
    total = window[-1][1] - window[0][1] if window else 0.0
    return {
        "seconds_until_not_ready": storm - killed,
        "models_flipped": len(flipped),
        "flip_spread_seconds": done - storm,
        "status_writes": total,
        "max_writes_per_second": max(per_second, default=0.0),
        "reports": len(ours),
        "failed_ms_p50": statistics.median(t.total for t in ours),
        "failed_ms_p90": pct([t.total for t in ours], 90),
        "failed_floor_ms_p50": statistics.median(t.total for t in floor),
        "failed_floor_ms_p90": pct([t.total for t in floor], 90),
        "event_create_ms_p50": statistics.median(t.create for t in ours + floor),
    }


async def _restarts(kube: Kube, ns: str) -> int:
    pods = await kube.request("GET", f"/api/v1/namespaces/{ns}/pods")
    return sum(cs.get("restartCount", 0) for p in pods["items"] for cs in p["status"].get("containerStatuses") or [])


QUIET_SECONDS = 95


async def report_after_quiet(kube: Kube, op: Operator, seconds: float = QUIET_SECONDS) -> dict:
    """One report after ``seconds`` in which the operator had nothing to do: longer than the API
    server keeps a connection that carries no request (90 s). Does the report wait for a new one?"""
    ns, name = "bench-latency", "quiet"
    await kube.create(AIMODELS, ns, model(name, ns, 0))
    await watch_until(kube, AIMODELS, ns, lambda _t, o: o["metadata"]["name"] == name and "status" in o, 60)
    await settle(op)
    connections = 'aimodel_operator_api_connections_opened_total{use="request"}'
    before = sum(op.metric(connections).values())
    await asyncio.sleep(seconds)  # the quiet spell is what is measured
    await kube.request("GET", "/version")  # the bench's own connection warm: only the operator's counts
    ms = (await report_ms(kube, ns, name, "bench: a report after a quiet spell")).total
    return {"failed_ms_after_quiet": ms, "connections_opened_for_it": sum(op.metric(connections).values()) - before}


async def resync(op: Operator, models: int) -> dict:
    """The next full resync (every model reconciled again): the operator's CPU time for it and the
    writes it caused. The operator is idle before it, so its CPU time meanwhile is the resync's."""
    metric = "aimodel_operator_resync_cpu_seconds_total"
    before = op.metric(metric).get(metric, 0.0)
    writes, cpu, reconciled = op.writes()[0], op.cpu_seconds(), op.reconciled()
    deadline = time.monotonic() + RESYNC_SECONDS + 30
    while op.metric(metric).get(metric, 0.0) == before and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    while op.reconciled() < reconciled + models and time.monotonic() < deadline + 120:
        await asyncio.sleep(0.2)
    return {
        "resync_cpu_seconds": op.cpu_seconds() - cpu,
        "resync_reconciles": op.reconciled() - reconciled,
        "resync_writes": op.writes()[0] - writes,
    }


async def idle_writes(op: Operator, seconds: float) -> dict[str, float]:
    """Writes (by method and resource) sent during ``seconds`` in which nothing changes."""
    before = op.metric("aimodel_operator_api_writes_total{")
    await asyncio.sleep(seconds)
    after = op.metric("aimodel_operator_api_writes_total{")
    return {k.split("{", 1)[1].rstrip("}"): v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


async def peers_side_by_side(
    kube: Kube,
    cluster: Cluster,
    rounds: int,
    memory_models: int,
    variants: list[str] | None = None,
    without_go: bool = False,
) -> dict:
    """This operator (with its defaults), its ``variants`` (NAME:KEY=VALUE,... its environment) and,
    when built into .peers/, the Go original."""
    import bench_peers
    from devcluster import keda
    from peers import go_operator

    peers: dict = {"ours": lambda: Operator(cluster)}
    for variant in variants or ():
        name, _, assignments = variant.partition(":")
        env = dict(a.split("=", 1) for a in assignments.split(",") if a)
        peers[name] = lambda env=env: Operator(cluster, env=env)
    # The Go original's reconciles fail without KEDA's CRDs: both run with them (not KEDA itself),
    # removed again after, so the rest of the benchmark runs as it always has.
    keda_crds = go_operator.binary() is not None and not without_go and go_operator.install_keda_crds(cluster)
    if keda_crds:
        peers["go"] = lambda: go_operator.GoOperator(cluster)
    else:
        print("  (the Go original is not built: `make peers` builds it, docs/benchmarks.md)", flush=True)
    bench_peers.ROUNDS = rounds
    try:
        return await bench_peers.side_by_side(kube, cluster, peers, memory_models)
    finally:
        if keda_crds:
            for path in sorted(keda.crds_dir().glob("*.yaml")):
                cluster.kubectl("delete", "--wait", "-f", str(path))


async def run(args: argparse.Namespace) -> dict:
    cluster = Cluster(REPO / ".devcluster-bench")
    cluster.up()
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "config" / "crd" / "bases"))
        floor_file = cluster.dir / "floor-crd.json"
        floor_file.write_text(json.dumps(floor_crd()))
        cluster.kubectl("apply", "--server-side", "-f", str(floor_file))
        cluster.wait_established("aimodels.model.youxam.com")
        cluster.wait_established(floor_crd()["metadata"]["name"])
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        kube = Kube(await load_configuration())
        results: dict = {"models": args.models}
        # The floor first, on the same empty cluster the operator's latencies are measured on.
        print("a report's floor (a minimal reporter, no operator) ...", flush=True)
        results.update(await report_floor(kube, args.samples))
        print("the error path as an outside harness measures it, side by side ...", flush=True)
        results["peers"] = await peers_side_by_side(
            kube, cluster, args.peer_rounds, args.peer_memory_models, args.variant, args.without_go
        )
        if args.only_peers:
            await kube.close()
            return results
        op = Operator(cluster, RESYNC_SECONDS)
        op.start()
        try:
            print("latencies ...", flush=True)
            results.update(await latencies(kube, op, args.samples))
            print(f"{args.models} models at once ...", flush=True)
            bulk_result = await bulk(kube, op, args.models)
            results.update({f"bulk_{k}": v for k, v in bulk_result.items()})
            print("idle ...", flush=True)
            results["idle_writes_10s"] = await idle_writes(op, 10)
            op.stop()
            restarted = time.monotonic()
            op.start()
            results["restart_ready_seconds"] = time.monotonic() - restarted
            total = args.models + args.samples
            deadline = time.monotonic() + 300
            while op.reconciled() < total and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            results["restart_reconciled"] = op.reconciled()
            results["restart_all_reconciled_seconds"] = time.monotonic() - restarted
            results["restart_writes_10s"] = await idle_writes(op, 10)
            results["restart_rss_mib"] = op.rss_mib()
            print(f"a full resync (every {RESYNC_SECONDS} s here) ...", flush=True)
            results.update(await resync(op, args.models))
            print(f"a report after {QUIET_SECONDS} s of quiet ...", flush=True)
            results.update(await report_after_quiet(kube, op))
            if args.models > POD_PHASES_UP_TO:
                # At this scale the simulated pods (3 per model) would measure kwok, not the operator.
                print(f"no worker pod phases above {POD_PHASES_UP_TO} models", flush=True)
            else:
                print(f"{args.models} models with 3 worker pods each ...", flush=True)
                results.update({f"pods_{k}": v for k, v in (await with_pods(kube, op, args.models)).items()})
                print("a crash-looping model, 60 s ...", flush=True)
                results.update({f"crash_loop_{k}": v for k, v in (await crash_loop(kube, op)).items()})
                print("a node failure: every worker pod not Ready ...", flush=True)
                storm = await node_failure(kube, op, cluster, args.models)
                results.update({f"node_failure_{k}": v for k, v in storm.items()})
        finally:
            results["rss_peak_mib"] = op.peak_mib
            op.stop()
        # The same writes without the operator (stopped: it would adopt these models).
        print(f"bare API writes for {args.models} models ...", flush=True)
        results["bare_seconds"] = await bare_writes(kube, args.models, Settings())
        results["bulk_ratio"] = results["bulk_seconds"] / results["bare_seconds"]
        results["failed_over_floor"] = results["failed_ms_p50"] / results["failed_floor_ms_p50"]
        await kube.close()
    finally:
        cluster.down()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--peer-rounds", type=int, default=3, help="rounds of the side-by-side error path")
    parser.add_argument(
        "--peer-memory-models", type=int, default=1000, help="models with a worker pod each for the memory side by side"
    )
    parser.add_argument(
        "--variant",
        action="append",
        metavar="NAME:KEY=VALUE,...",
        help="also run this operator with this environment side by side (an experiment)",
    )
    parser.add_argument("--without-go", action="store_true", help="not the Go original, even when built")
    parser.add_argument("--only-peers", action="store_true", help="the floor and the side-by-side part only")
    parser.add_argument("--floor-reporter", metavar="NAMESPACE", help=argparse.SUPPRESS)
    parser.add_argument("--floor-group", default=api.GROUP, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_reporter:
        res = AIMODELS if args.floor_group == api.GROUP else FLOOR_MODELS
        asyncio.run(floor_reporter(args.floor_reporter, res))
        return
    results = asyncio.run(run(args))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
