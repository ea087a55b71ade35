"""An event flood: 100 000 worker reports on one AIModel, within the deployment's memory limit.

The operator watches Warning Events about AIModels without caching them, and
batches status writes whose only change is a newer message. A worker stuck in
a crash loop (or a hostile one) can post reports as fast as the API server
takes them: the operator must keep up (the newest report ends in the status),
stay under the 256Mi limit of config/manager/manager.yaml, write little, and
start again within its readiness budget with every one of those Events still
listed, writing nothing since the status is already right.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from fault_invariants import LOCAL, assert_alive, assert_writes_flat, condition, model_manifest, status, worker_event

from aimodel_operator.kube import resource_of
from faults.faultproxy import FaultProxy
from kube_helpers import Kubectl, OperatorProcess, wait_for

# resources.limits.memory of config/manager/manager.yaml.
MEMORY_LIMIT_KIB = 256 * 1024
EVENTS = 100_000
# One Event in this many names an AIModel that does not exist.
OTHER_EVERY = 20
OTHER_MODELS = 10
CONCURRENCY = 64
MESSAGE_LEN = 200
# The status writer's batches (StatusWriter): a status whose only change is a newer message is
# written at most once per batch, however many reports come in, and batches that follow each
# other double from 1 s up to 30 s: 1+2+4+8+16 = 31 s in 5 writes, then one per 30 s.
MAX_BATCH_SECONDS = 30.0
# Writes beyond that: the first Failed status (urgent), a batch cut short at either end.
SPARE_WRITES = 3
# After the restart: how long the write counter must stay at zero once the operator is ready.
QUIET_HOLD = 10.0
REPORTS_METRIC = 'aimodel_operator_worker_reports_total{reason="GeneralError"}'


class MemorySampler:
    """Samples a process's VmRSS and VmHWM (KiB) from /proc in a background thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.max_rss = 0
        self.hwm = 0
        self.samples = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"memory-{pid}", daemon=True)

    def read(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
        return out

    def sample(self) -> None:
        try:
            now = self.read()
        except OSError as err:
            self.error = repr(err)
            return
        self.samples += 1
        self.max_rss = max(self.max_rss, now["VmRSS"])
        self.hwm = max(self.hwm, now["VmHWM"])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    def summary(self) -> str:
        return (
            f"VmHWM {self.hwm / 1024:.1f} MiB, max sampled VmRSS {self.max_rss / 1024:.1f} MiB ({self.samples} samples)"
        )


def admin_endpoint(kubeconfig: Path, tmp_path: Path) -> tuple[str, ssl.SSLContext]:
    """The API server's URL and an SSL context with the kubeconfig's CA and admin client certificate."""
    cfg = yaml.safe_load(kubeconfig.read_text())  # JSON is YAML too
    ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
    cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])["cluster"]
    user = next(u for u in cfg["users"] if u["name"] == ctx["user"])["user"]

    def pem(section: dict[str, Any], key: str) -> bytes:
        if f"{key}-data" in section:
            return base64.b64decode(section[f"{key}-data"])
        return Path(section[key]).read_bytes()

    context = ssl.create_default_context(cadata=pem(cluster, "certificate-authority").decode())
    cert, key = tmp_path / "flood-admin.crt", tmp_path / "flood-admin.key"
    cert.write_bytes(pem(user, "client-certificate"))
    key.write_bytes(pem(user, "client-key"))
    os.chmod(key, 0o600)
    context.load_cert_chain(cert, key)
    return cluster["server"].rstrip("/"), context


def report(namespace: str, name: str, model: str, message: str) -> dict[str, Any]:
    """A worker's error report as the uplion SDK posts it (no apiVersion in involvedObject)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = worker_event(namespace, name, model, message)
    event["source"] = {"component": "flood-worker"}
    return {**event, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1}


def flood_message(i: int) -> str:
    return f"report {i:06d} of the flood: inference backend unreachable; ".ljust(MESSAGE_LEN, "x")


async def post_events(
    server: str, context: ssl.SSLContext, namespace: str, bodies: list[bytes], concurrency: int
) -> tuple[int, float]:
    """POST every body with ``concurrency`` requests in flight; (retries, seconds). Fails on any lost Event."""
    url = f"{server}/api/v1/namespaces/{namespace}/events"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    next_index = 0
    retries = 0

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal next_index, retries
        while next_index < len(bodies):
            body = bodies[next_index]
            next_index += 1
            for attempt in range(10):
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        text = await resp.read()
                        if resp.status == 201:
                            break
                        if resp.status == 409:  # created by an attempt whose answer was lost
                            break
                        if resp.status not in (429, 500, 503, 504) or attempt == 9:
                            raise AssertionError(f"POST event: HTTP {resp.status}: {text[:300]!r}")
                except (aiohttp.ClientConnectionError, TimeoutError):
                    if attempt == 9:
                        raise
                retries += 1
                await asyncio.sleep(0.05 * 2**attempt)

    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
    return retries, time.monotonic() - started


def seconds_since_start(pid: int) -> float:
    """How long ago the process started (from /proc, in clock ticks since boot)."""
    start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def writes_by_kind(proxy: FaultProxy, namespace: str) -> dict[str, float]:
    """The operator's API writes in the test's namespace by "METHOD resource", e.g. "PATCH aimodels/status".

    Counted by the proxy in front of the operator: the operator watches every namespace, and what
    earlier tests leave behind (namespaces being deleted) must not count here.
    """
    out: dict[str, float] = {}
    for w in proxy.writes():
        if f"/namespaces/{namespace}/" in w.path:
            kind = f"{w.method} {resource_of(w.path)}"
            out[kind] = out.get(kind, 0.0) + 1
    return out


def writes_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {kind: after[kind] - before.get(kind, 0.0) for kind in after if after[kind] != before.get(kind, 0.0)}


def reports_seen(operator: OperatorProcess) -> float:
    return operator.metrics().get(REPORTS_METRIC, 0.0)


def test_event_flood_stays_under_the_memory_limit(
    proxied_operator: OperatorProcess, proxy: FaultProxy, k: Kubectl, namespace: str, kubeconfig: Path, tmp_path: Path
) -> None:
    operator = proxied_operator
    k.apply(model_manifest("m", LOCAL))
    wait_for("m Ready", lambda: condition(k, "m", "Ready").get("status") == "True", timeout=30)
    assert_writes_flat(operator, hold=2.0)
    writes_before = writes_by_kind(proxy, namespace)
    reports_before = reports_seen(operator)

    others = [f"ghost-{n}" for n in range(OTHER_MODELS)]
    bodies = [
        json.dumps(
            report(
                namespace,
                f"flood-{i:06d}",
                others[i // OTHER_EVERY % OTHER_MODELS] if i % OTHER_EVERY == 0 else "m",
                flood_message(i),
            )
        ).encode()
        for i in range(EVENTS)
    ]
    final_message = "the newest report, posted after every other: model weights not found; ".ljust(MESSAGE_LEN, "z")
    server, context = admin_endpoint(kubeconfig, tmp_path)

    with MemorySampler(operator.proc.pid) as flood_memory:
        flood_started = time.monotonic()
        retries, flood_seconds = asyncio.run(post_events(server, context, namespace, bodies, CONCURRENCY))
        print(
            f"\nflood: {EVENTS} Events ({EVENTS // OTHER_EVERY} for {OTHER_MODELS} models that do not exist) "
            f"in {flood_seconds:.1f}s = {EVENTS / flood_seconds:.0f}/s with {CONCURRENCY} in flight, "
            f"{retries} retries"
        )
        writes_at_flood_end = writes_since(writes_before, writes_by_kind(proxy, namespace))
        assert_alive(operator)
        # Alone, after all others: the newest report by resourceVersion.
        final_body = json.dumps(report(namespace, "flood-final", "m", final_message)).encode()
        asyncio.run(post_events(server, context, namespace, [final_body], 1))
        posted = time.monotonic()
        wait_for(
            "the newest report in m's status",
            lambda: status(k, "m").get("message") == f"GeneralError: {final_message}",
            timeout=60,
            interval=0.2,
        )
        lag = time.monotonic() - posted
        busy_seconds = time.monotonic() - flood_started
        assert_writes_flat(operator, hold=3.0)
        flood_writes = writes_since(writes_before, writes_by_kind(proxy, namespace))
    reports = reports_seen(operator) - reports_before
    total_writes = sum(flood_writes.values())
    print(
        f"flood: newest report in status {lag:.1f}s after it was posted; {reports:.0f} reports accepted "
        f"of {EVENTS + 1} posted; operator writes while flooded {writes_at_flood_end}, "
        f"in all {total_writes:.0f} {flood_writes} over {busy_seconds:.0f}s"
    )
    print(f"flood: operator memory {flood_memory.summary()}")

    final = status(k, "m")
    assert final["state"] == "Failed", final
    assert final["message"].startswith("GeneralError:"), final
    assert condition(k, "m", "Ready").get("reason") == "WorkerReportedError", final
    assert flood_memory.error is None, flood_memory.error
    assert flood_memory.hwm < MEMORY_LIMIT_KIB, f"peak {flood_memory.summary()} over the 256Mi limit"
    # Bounded by the batches, not by the reports: a handful of status writes for the whole flood,
    # and one announcing Event (StateFailed): the same error with new messages is no news.
    status_writes = flood_writes.pop("PATCH aimodels/status", 0.0)
    announced = flood_writes.pop("POST events", 0.0)
    assert status_writes <= 5 + busy_seconds / MAX_BATCH_SECONDS + SPARE_WRITES, (
        f"{status_writes} status writes in {busy_seconds:.0f}s of reports"
    )
    assert announced <= 1, f"{announced} Events announced for one error repeated with new messages"
    assert not flood_writes, f"writes other than status and its Events: {flood_writes}"
    assert_alive(operator)

    # A restart lists every one of those Events again (500 a page) before it is ready.
    model_rv = k.get("aimodel", "m")["metadata"]["resourceVersion"]
    started = time.monotonic()
    before_restart = writes_by_kind(proxy, namespace)
    operator.restart()  # waits up to 60 s for /readyz
    restart_seconds = time.monotonic() - started
    ready_after = seconds_since_start(operator.proc.pid)
    with MemorySampler(operator.proc.pid) as restart_memory:
        deadline = time.monotonic() + QUIET_HOLD
        while time.monotonic() < deadline:
            writes = writes_by_kind(proxy, namespace)
            assert writes == before_restart, f"writes after the restart, the status being right already: {writes}"
            time.sleep(0.25)
    print(
        f"restart: ready {ready_after:.1f}s after the process started ({restart_seconds:.1f}s with the stop); "
        f"memory {restart_memory.summary()}; 0 writes for {QUIET_HOLD:.0f}s after ready"
    )
    assert restart_memory.error is None, restart_memory.error
    assert restart_memory.hwm < MEMORY_LIMIT_KIB, f"peak {restart_memory.summary()} over the 256Mi limit"
    assert k.get("aimodel", "m")["metadata"]["resourceVersion"] == model_rv
    assert status(k, "m") == final
    assert_alive(operator)
