"""The reference worker as a local process, the way a kubelet would start it in a pod of its
Deployment (pods do not run on the simulated nodes): the container's environment with its Secret
references resolved, its Secret volumes as files (kept current by ``sync_secret_volumes``, as a
kubelet does), a token of the pod's ServiceAccount, and a termination-message file."""

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
    mounts = sync_secret_volumes(kubectl, namespace, model, workdir, deploy)
    for var, value in env.items():
        # A file in a mounted volume, by its path in the container: the same file here.
        for mount_path, local in mounts.items():
            if value.startswith(f"file://{mount_path}/"):
                env[var] = f"file://{local}/{value.removeprefix(f'file://{mount_path}/')}"
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


def sync_secret_volumes(
    kubectl: Kubectl, namespace: str, model: str, workdir: Path, deploy: dict | None = None
) -> dict[str, Path]:
    """Write the worker container's Secret volumes under ``workdir`` as they are now (each file
    replaced atomically, as the kubelet swaps its symlink); returns mount path -> local dir."""
    if deploy is None:
        deploy = json.loads(kubectl("-n", namespace, "get", "deployment", f"{model}-deployment", "-o", "json"))
    pod = deploy["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts: dict[str, Path] = {}
    for mount in pod["containers"][0].get("volumeMounts") or []:
        source = (volumes.get(mount["name"]) or {}).get("secret")
        if source is None:
            continue
        local = workdir / f"{model}-volume-{mount['name']}"
        local.mkdir(parents=True, exist_ok=True)
        secret = json.loads(kubectl("-n", namespace, "get", "secret", source["secretName"], "-o", "json"))
        data = secret.get("data") or {}
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] in data:
                tmp = local / f".{item['path']}.tmp"
                tmp.write_bytes(base64.b64decode(data[item["key"]]))
                tmp.replace(local / item["path"])
        mounts[mount["mountPath"]] = local
    return mounts


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
