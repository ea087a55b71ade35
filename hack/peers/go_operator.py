"""uplion's original Go operator as a process on the local cluster, for benchmarks side by side with ours.

Built by ``make peers`` (hack/peers/go-operator.sh) from a clone of
https://github.com/uplion/ai-model-operator in .peers/src/ai-model-operator into
.peers/bin/aimodel-operator-go; never part of the repository or of ``make test``.
``GoOperator`` has the interface of ``Operator`` in hack/bench.py. Run one operator at a time
on a cluster: both serve every AIModel in every namespace, and both name the Deployment
``<name>-deployment``, so side by side on one cluster they would fight over it.

What the Go operator is (read from cmd/main.go, internal/controller/aimodel_controller.go and
internal/listener/events.go at upstream commit 1ca3fed):

- Flags: ``--metrics-bind-address`` (default :8080), ``--health-probe-bind-address`` (:8081),
  ``--leader-elect`` (off unless given; its manifest turns it on), zap's ``--zap-*`` flags
  (development mode by default: console lines at debug level). It reads KUBECONFIG like any
  controller-runtime manager. No webhook is registered, so no webhook port is opened.
- Environment: optional only. ``PULSAR_ADMIN_URL`` (default empty) is only copied into the KEDA
  ScaledObject's pulsar trigger; ``PULSAR_URL`` (default pulsar://localhost:6650), ``PULSAR_TOKEN``
  and ``RES_TOPIC_NAME`` (default res-topic) are only copied into the worker containers' env.
  The operator never connects to Pulsar itself: creating a model works the same whether or not
  Pulsar is reachable (a wrong URL only breaks the workers and KEDA's scaler later).
- Per AIModel it creates (Create, then Update on AlreadyExists, on *every* reconcile) a
  ServiceAccount ``<name>-deployment-sa``, a Role and RoleBinding for events, then the Deployment
  ``<name>-deployment`` (selector label ``aimodel-internel-selector=<name>``), and sets
  ``status.state="Running"``, ``status.message="AIModel is running successfully"`` with a full
  status Update. It then Gets the KEDA ScaledObject ``<name>-scaledobject`` (uncached,
  unstructured), creating it only if ``spec.msgBacklogThreshold`` is set. Without KEDA's CRD on
  the cluster that Get fails ("failed to get API group resources: ... keda.sh/v1alpha1: the
  server could not find the requested resource"), so every reconcile that reaches it ends in an
  error and is retried with backoff (the Deployment and status are already written by then; on
  the local cluster one new model cost 66 write requests in its first 3 s, against 24 with the
  CRD): ``install_keda_crds()`` gives it KEDA's CRDs without KEDA itself, after which a model
  without msgBacklogThreshold reconciles cleanly. Every reconcile re-sends Create and Update for
  the ServiceAccount, Role and RoleBinding (6 write requests, 3 of them refused with 409), and it
  reconciles on every change of its Deployment's status. One reconcile worker (the default).
- Our CRD serves it as is: it writes only ``status.state`` (Running/Failed, within our enum) and
  ``status.message``, replacing the whole status (our conditions, observedGeneration, replicas
  are dropped). Spec fields it does not know are ignored: ``apiKeySecretRef`` (its workers then
  get an empty API_KEY), ``template``, ``minReplicas``/``maxReplicas`` and the other KEDA knobs.
- Worker reports -> status: a goroutine watches core/v1 Events in all namespaces (one plain
  watch, no informer). For each ADDED Event of ``type: Warning`` whose
  ``involvedObject.kind == "AIModel"`` it Gets that AIModel (namespace and name from
  involvedObject, from its cache; the uid is not checked) and Updates its status to
  ``state: "Failed"``, ``message: "<reason>: <message>"``. Any reason counts (APIKeyError or
  anything else); the source component is not checked. A conflicting update is logged and lost.
  Events are only handled when their creationTimestamp (whole seconds) is after the moment the
  watch opened, so Events from the first second after start are ignored: ``start()`` returns only
  once that second has passed. The watch is never re-opened: when the API server ends it (after
  its min-request-timeout, 30 to 60 minutes by default) or the connection drops, no further Event
  turns a model Failed until the process restarts; Events posted while it was down are never seen.
  Nothing resets Failed except a reconcile that creates or updates the Deployment (a change of
  replicas, image, env or labels). On the local cluster Failed showed 0.3 to 0.4 s after the
  Event's create (polled with kubectl).
- Its /readyz is a plain ping (200 as soon as the probe server listens, before caches sync and
  before the event watch opens: seen on the local cluster), so
  ``start()`` also waits for the controller's "Starting workers" and the listener's "Watcher
  created" log lines.
- It posts no Events. Its API calls are in client-go's ``rest_client_requests_total{method=...}``.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from devcluster import keda
from devcluster.cluster import Cluster, free_port

REPO = Path(__file__).resolve().parents[2]
BINARY = REPO / ".peers" / "bin" / "aimodel-operator-go"
READY_TIMEOUT = 120
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def binary() -> Path | None:
    """The built Go operator, or None (``make peers`` builds it from a clone; docs/benchmarks.md)."""
    return BINARY if BINARY.is_file() and os.access(BINARY, os.X_OK) else None


def install_keda_crds(cluster: Cluster) -> bool:
    """KEDA's CRDs (not KEDA): the Go operator's reconciles fail without scaledobjects.keda.sh.

    False if KEDA is not built (``make tools`` builds it; ``devcluster up --keda`` runs it all).
    """
    if not keda.crds_dir().is_dir():
        return False
    keda.install_crds(cluster.procs, cluster.kube)
    return True


class GoOperator:
    """The Go original run like ``Operator`` in hack/bench.py: same methods, same measurements."""

    log_name = "operator-go.log"

    def __init__(self, cluster: Cluster, env: dict[str, str] | None = None) -> None:
        self.cluster = cluster
        # Extra environment (PULSAR_ADMIN_URL, PULSAR_URL, ...); none is needed.
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.metrics_port = 0
        self.health_port = 0
        # The highest resident memory seen, sampled every 0.1 s by a thread, across restarts.
        self.peak_mib = 0.0
        self._sampler: threading.Thread | None = None

    @property
    def log_path(self) -> Path:
        return self.cluster.dir / self.log_name

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
        path = binary()
        if path is None:
            raise SystemExit(
                f"the Go operator is not built ({BINARY.relative_to(REPO)}): "
                "git clone https://github.com/uplion/ai-model-operator .peers/src/ai-model-operator && make peers"
            )
        self.health_port, self.metrics_port = free_port(), free_port()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [
                str(path),
                f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
                f"--health-probe-bind-address=127.0.0.1:{self.health_port}",
                "--leader-elect=false",
            ],
            env={**os.environ, **self.env, "KUBECONFIG": str(self.cluster.kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()  # the child has its own copy
        self._sampler = threading.Thread(target=self._sample, args=(self.proc,), daemon=True)
        self._sampler.start()
        deadline = time.monotonic() + READY_TIMEOUT
        ready = False
        watching_since = 0.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the Go operator exited with {self.proc.returncode}; see {self.log_path}")
            if not ready:
                try:
                    url = f"http://127.0.0.1:{self.health_port}/readyz"
                    ready = urllib.request.urlopen(url, timeout=1).status == 200
                except (urllib.error.HTTPError, OSError):
                    pass
            if ready:
                text = self._log_since(offset)
                if not watching_since and "Watcher created" in text:
                    watching_since = time.time()
                if watching_since and "Starting workers" in text:
                    # Events are taken only if created (whole seconds) after the watch opened.
                    time.sleep(max(0.0, int(watching_since) + 1.05 - time.time()))
                    return
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"the Go operator did not become ready in {READY_TIMEOUT} s; see {self.log_path}")

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def metric(self, prefix: str) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith(prefix):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def writes(self) -> tuple[float, float]:
        """(API writes, Events posted): it posts no Events. Writes the API server refused count too
        (most are the 409 AlreadyExists of its create-then-update of ServiceAccount, Role, RoleBinding)."""
        rows = self.metric("rest_client_requests_total{")
        return sum(v for k, v in rows.items() if any(f'method="{m}"' in k for m in WRITE_METHODS)), 0.0

    def reconciled(self) -> float:
        rows = self.metric("controller_runtime_reconcile_total{")
        return sum(v for k, v in rows.items() if 'controller="aimodel"' in k and 'result="success"' in k)

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
