"""The reference worker as a local process, the way a kubelet would start it in a pod of its
Deployment (pods do not run on the simulated nodes): the container's environment with its Secret
references resolved, a token of the pod's ServiceAccount, and a termination-message file."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

Kubectl = Callable[..., str]


def worker_environment(kubectl: Kubectl, kubeconfig: Path, namespace: str, model: str, workdir: Path) -> dict[str, str]:
    """The environment of ``model``'s worker container, with a kubeconfig holding its
    ServiceAccount's token. ``POD_NAME`` (a fieldRef) stays unset: no pod of that name exists."""
    deploy = json.loads(kubectl("-n", namespace, "get", "deployment", f"{model}-deployment", "-o", "json"))
    pod = deploy["spec"]["template"]["spec"]
    env: dict[str, str] = {}
    secrets: dict[str, dict] = {}
    for item in pod["containers"][0].get("env", []):
        source = item.get("valueFrom")
        if source is None:
            env[item["name"]] = item.get("value", "")
            continue
        ref = source.get("secretKeyRef")
        if ref is None:
            continue
        if ref["name"] not in secrets:
            secrets[ref["name"]] = json.loads(kubectl("-n", namespace, "get", "secret", ref["name"], "-o", "json"))
        raw = (secrets[ref["name"]].get("data") or {}).get(ref["key"])
        if raw is not None:
            env[item["name"]] = base64.b64decode(raw).decode()
    workdir.mkdir(parents=True, exist_ok=True)
    token = kubectl("-n", namespace, "create", "token", pod["serviceAccountName"]).strip()
    text = Path(kubeconfig).read_text()
    if text.lstrip().startswith("{"):
        cfg = json.loads(text)
    else:
        import yaml

        cfg = yaml.safe_load(text)
    ctx_name = cfg["current-context"]
    ctx = next(c for c in cfg["contexts"] if c["name"] == ctx_name)["context"]
    cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    worker_cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "worker", "user": {"token": token}}],
        "contexts": [{"name": "worker", "context": {"cluster": cluster["name"], "user": "worker"}}],
        "current-context": "worker",
    }
    path = workdir / f"{model}-kubeconfig"
    path.write_text(json.dumps(worker_cfg))
    path.chmod(0o600)
    termination = workdir / f"{model}-termination-log"
    termination.write_text("")
    env["KUBECONFIG"] = str(path)
    env["TERMINATION_LOG"] = str(termination)
    return env


class WorkerProcess:
    """``aimodel-worker`` with a pod's environment; its output goes to ``log``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "TMPDIR")}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aimodel_worker.runner.cli"],
                env={**keep, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
