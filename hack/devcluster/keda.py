"""The real KEDA operator, built from its Go module and run against the local cluster.

Only the operator runs: it turns ScaledObjects into HPAs and reports their
conditions. KEDA's metrics adapter is not started: it must be reachable
through an APIService endpoint, and Endpoints refuse loopback addresses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

from . import build, versions
from .cluster import Cluster, free_port

NAMESPACE = "keda"
MODULE = "github.com/kedacore/keda/v2"


def binary() -> Path:
    return build.keda_dir() / "bin" / "keda"


def build_keda() -> Path:
    dest = build.keda_dir() / "bin"
    if (dest / "keda").exists() and (dest / "crds").is_dir():
        return dest
    work = build.keda_dir()
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    build._log(f"building KEDA {versions.KEDA} (first time only; several minutes)")
    gomod = build._gomod_path(MODULE, versions.KEDA, src)
    block = re.search(r"^replace \((.*?)^\)", gomod.read_text(), re.M | re.S)
    replaces = {}
    for line in (block.group(1) if block else "").splitlines():
        line = line.split("//")[0].strip()
        if "=>" in line:
            left, right = (part.strip() for part in line.split("=>"))
            replaces[left.split()[0]] = right
    build._write_wrapper(src, "keda", {MODULE: versions.KEDA}, replaces)
    tmp_bin = work / "bin.tmp"
    tmp_bin.mkdir(exist_ok=True)
    build._run_go(
        ["build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp_bin / "keda"), f"{MODULE}/cmd/operator"],
        src,
        f"keda {versions.KEDA}",
    )
    # The CRDs of the very same module version, for `kubectl apply`.
    module_dir = Path(
        subprocess.run(
            ["go", "list", "-m", "-f", "{{.Dir}}", MODULE],
            cwd=src,
            env=build._go_env(),
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    shutil.copytree(module_dir / "config" / "crd" / "bases", tmp_bin / "crds")
    for path in (tmp_bin / "crds").iterdir():
        path.chmod(0o644)
    build._finish(dest, tmp_bin)
    return dest


def crds_dir() -> Path:
    return build.keda_dir() / "bin" / "crds"


def install_crds(cluster: Cluster) -> None:
    for path in sorted(crds_dir().glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    cluster.wait_established("scaledobjects.keda.sh")


def uninstall(cluster: Cluster) -> None:
    """Stop KEDA and remove its CRDs (and with them every ScaledObject): a cluster without KEDA."""
    cluster.stop_component("keda")
    for path in sorted(crds_dir().glob("*.yaml")):
        cluster.kubectl("delete", "--ignore-not-found", "--wait=true", "-f", str(path))


def running(cluster: Cluster) -> bool:
    return any(c.name == "keda" and cluster.alive(c) for c in cluster.components())


def start(cluster: Cluster) -> None:
    build_keda()
    build._log("starting KEDA")
    install_crds(cluster)
    cluster.kubectl(
        "apply", "-f", "-", input=f'{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{NAMESPACE}"}}}}'
    )
    certs = cluster.dir / "keda-certs"
    certs.mkdir(exist_ok=True)
    shutil.copy(cluster.pki / "ca.crt", certs / "ca.crt")
    shutil.copy(cluster.pki / "serving.crt", certs / "tls.crt")
    shutil.copy(cluster.pki / "serving.key", certs / "tls.key")
    health = free_port()
    comp = cluster.spawn(
        "keda",
        [
            str(binary()),
            f"--kubeconfig={cluster.kubeconfig}",
            "--leader-elect=false",
            f"--cert-dir={certs}",
            "--enable-cert-rotation=false",
            f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{health}",
            f"--metrics-service-bind-address=127.0.0.1:{free_port()}",
            "--zap-log-level=info",
        ],
        env={
            "WATCH_NAMESPACE": "",
            "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
            "POD_NAMESPACE": NAMESPACE,
            "OPERATOR_NAME": "keda-operator",
        },
    )
    cluster.wait(
        "KEDA /readyz",
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=2).status == 200,
        comp,
        timeout=90,
    )
    build._log("KEDA is running")
