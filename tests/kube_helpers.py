"""Helpers for tests on a real cluster: kubectl, polling with a deadline, the operator process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class Kubectl:
    def __init__(self, binary: str, kubeconfig: Path, namespace: str | None = None) -> None:
        self.binary = binary
        self.kubeconfig = Path(kubeconfig)
        self.namespace = namespace

    def in_namespace(self, namespace: str) -> Kubectl:
        return Kubectl(self.binary, self.kubeconfig, namespace)

    def run(
        self, *args: str, input: str | None = None, check: bool = True, token: str | None = None
    ) -> subprocess.CompletedProcess:
        if token is None:
            argv = [self.binary, "--kubeconfig", str(self.kubeconfig)]
        else:
            # Same server and CA, authenticated only by the token.
            argv = [self.binary, "--kubeconfig", str(self._token_kubeconfig()), "--token", token]
        if self.namespace and "-A" not in args and "--all-namespaces" not in args:
            argv += ["-n", self.namespace]
        res = subprocess.run([*argv, *args], input=input, capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def _token_kubeconfig(self) -> Path:
        """A kubeconfig with the cluster's server and CA and no user credentials."""
        path = self.kubeconfig.with_name(self.kubeconfig.name + ".anon")
        # Rewritten whenever the cluster (and with it the kubeconfig) is newer.
        if not path.exists() or path.stat().st_mtime < self.kubeconfig.stat().st_mtime:
            cfg = (
                json.loads(self.kubeconfig.read_text())
                if self.kubeconfig.read_text().lstrip().startswith("{")
                else None
            )
            if cfg is None:
                import yaml

                cfg = yaml.safe_load(self.kubeconfig.read_text())
            ctx_name = cfg["current-context"]
            ctx = next(c for c in cfg["contexts"] if c["name"] == ctx_name)["context"]
            cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])
            anon = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "token", "user": {}}],
                "contexts": [{"name": "token", "context": {"cluster": ctx["cluster"], "user": "token"}}],
                "current-context": "token",
            }
            path.write_text(json.dumps(anon))
        return path

    def __call__(self, *args: str, **kwargs: Any) -> str:
        return self.run(*args, **kwargs).stdout

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.run(*args, "-o", "json", **kwargs).stdout)

    def get(self, kind: str, name: str) -> dict | None:
        res = self.run("get", kind, name, "-o", "json", check=False)
        if res.returncode != 0:
            if "NotFound" in res.stderr:
                return None
            raise AssertionError(res.stderr)
        return json.loads(res.stdout)

    def apply(self, manifest: dict | str, *extra: str) -> str:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self("apply", "-f", "-", *extra, input=text)

    def create_token(self, service_account: str, duration: str = "1h") -> str:
        return self("create", "token", service_account, f"--duration={duration}").strip()


def drop_namespace(kubectl: Kubectl, name: str) -> None:
    """Delete a test's namespace without waiting for it, but its AIModels first and for good: a
    model left in a terminating namespace would still hold its model name (ModelNameInUse) against
    the next test's namesake."""
    kubectl.in_namespace(name).run("delete", "aimodels", "--all", "--timeout=30s", check=False)
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` and the last value at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except AssertionError as err:
            last = err
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def established(kubectl: Kubectl, crd: str, timeout: float = 60) -> None:
    """Wait until a CRD is Established (polled: a brand-new CRD may have no conditions, which
    makes `kubectl wait` fail at once instead of waiting)."""
    path = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    wait_for(f"CRD {crd} Established", lambda: kubectl("get", "crd", crd, "-o", path) == "True", timeout=timeout)


class OperatorProcess:
    """``aimodel-operator run`` as a real process against the test cluster."""

    def __init__(self, kubeconfig: Path, log_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self.health_port = 0
        self.log_path: Path | None = None
        self.starts = 0

    def start(
        self, env: dict[str, str] | None = None, kubeconfig: Path | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        from devcluster.cluster import free_port

        assert self.proc is None
        self.env = dict(env or {})
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.starts += 1
        self.log_path = self.log_dir / f"operator-{self.starts}.log"
        full_env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "PULSAR_ADMIN_URL",
                "PULSAR_URL",
                "PULSAR_TOKEN",
                "RES_TOPIC_NAME",
                "PULSAR_ADMIN_TOKEN",
                "PULSAR_TOKEN_SIGNING_KEY_FILE",
            )
        }
        full_env.update({"KUBECONFIG": str(kubeconfig or self.kubeconfig), **self.env})
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aimodel_operator",
                    "run",
                    f"--health-port={self.health_port}",
                    f"--metrics-port={self.metrics_port}",
                    *extra_args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=REPO,
            )
        try:
            wait_for("the operator's readiness (caches synced)", self.healthy, timeout=60)
        except BaseException:
            # A process that never became healthy must not outlive the test.
            self.stop()
            raise

    def healthy(self, path: str = "/readyz") -> bool:
        import urllib.request

        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def api_writes(self) -> float:
        """Writes of the operator's work: Lease renewals of leader election (a heartbeat) not counted."""
        return sum(
            v
            for k, v in self.metrics().items()
            if k.startswith("aimodel_operator_api_writes_total{") and 'resource="leases"' not in k
        )

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def restart(self, env: dict[str, str] | None = None) -> None:
        self.stop()
        self.start(env if env is not None else self.env)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class ServedModel:
    """An AIModel on the test cluster whose workers run as local processes with its Deployment's
    environment: ``start()`` runs one, ``state()`` reads the AIModel's."""

    def __init__(self, name: str, model_name: str, k, kubectl, kubeconfig, namespace: str, tmp_path: Path) -> None:
        self.name, self.model_name = name, model_name
        self.topic = f"persistent://public/default/model-{model_name}"
        self.subscription = f"model-{model_name}-subscription"
        self.rest_topic = f"persistent/public/default/model-{model_name}"  # the admin API's form
        self.termination_log = tmp_path / f"{name}-termination-log"
        self._k, self._kubectl, self._kubeconfig, self._namespace, self._dir = (
            k,
            kubectl,
            kubeconfig,
            namespace,
            tmp_path,
        )
        self.processes: list = []

    def apply(self, spec: dict) -> ServedModel:
        self._k.apply(
            {
                "apiVersion": "model.youxam.com/v1alpha1",
                "kind": "AIModel",
                "metadata": {"name": self.name},
                "spec": spec,
            }
        )
        wait_for("the model Running", lambda: self.state()[0] == "Running")
        return self

    def env(self) -> dict[str, str]:
        from standins.kubelet import worker_environment

        return worker_environment(self._kubectl, self._kubeconfig, self._namespace, self.name, self._dir)

    def start(self, **overrides: str):
        from standins.kubelet import WorkerProcess

        proc = WorkerProcess({**self.env(), **overrides}, self._dir / f"worker-{len(self.processes)}.log").start()
        self.processes.append(proc)
        return proc

    def state(self) -> tuple[str | None, str | None]:
        status = (self._k.get("aimodel", self.name) or {}).get("status") or {}
        return status.get("state"), status.get("message")

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()
