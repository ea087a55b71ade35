"""Kubernetes itself: kube-apiserver, kube-controller-manager, kube-scheduler and kubectl, built
from k8s.io/kubernetes, and ``Kube``, the cluster's admin access for the other components."""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
import urllib.request
from pathlib import Path

from . import certs, gobuild, versions
from .base import BuildError, ClusterError, free_port, log
from .procs import Supervisor

COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
MODULE = "k8s.io/kubernetes"
# How often the HPA controller looks at each HPA (15 s upstream): short, so that scaling shows in seconds.
HPA_SYNC_PERIOD = "3s"


def bin_dir() -> Path:
    return gobuild.tool_dir("kubernetes", versions.KUBERNETES) / "bin"


def kubectl_path() -> Path:
    return bin_dir() / "kubectl"


def build() -> Path:
    dest = bin_dir()
    if all((dest / c).exists() for c in COMMANDS):
        return dest
    src = dest.parent / "src"
    log(f"building Kubernetes {versions.KUBERNETES} (first time only; 15-30 min on 2 cores)")
    gomod = gobuild.module_gomod(MODULE, versions.KUBERNETES, src)
    staging = re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/", gomod.read_text(), re.M)
    if not staging:
        raise BuildError(f"no staging replaces found in {gomod}")
    gobuild.write_wrapper(
        src,
        "kubernetes",
        {MODULE: versions.KUBERNETES},
        {m: f"{m} {versions.KUBERNETES_STAGING}" for m in staging},
    )
    major, minor = versions.KUBERNETES.lstrip("v").split(".")[:2]
    stamp = {
        "gitVersion": versions.KUBERNETES,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    ldflags = " ".join(
        f"-X {pkg}.{k}={v}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for k, v in stamp.items()
    )
    tmp = gobuild.staging_dir(dest)
    gobuild.run_go(
        ["build", "-v", "-trimpath", "-ldflags", f"-s -w {ldflags}", "-o", str(tmp)]
        + [f"{MODULE}/cmd/{c}" for c in COMMANDS],
        src,
        f"kubernetes {versions.KUBERNETES}",
    )
    return gobuild.publish(dest, tmp)


class Kube:
    """Admin access to the cluster: kubectl with the admin kubeconfig, and the apiserver's health."""

    def __init__(self, kubeconfig: Path, pki: Path) -> None:
        self.kubeconfig = kubeconfig
        self.pki = pki

    @property
    def server(self) -> str:
        try:
            return json.loads(self.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        except (OSError, ValueError, KeyError, IndexError):
            return ""

    def kubectl(self, *args: str, input: str | None = None) -> str:
        res = subprocess.run(
            [str(kubectl_path()), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout

    def apply(self, *objects: dict) -> None:
        """Server-side apply of ``objects`` (field manager devcluster)."""
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=devcluster", "-f", "-", input=doc)

    def ready(self) -> bool:
        try:
            ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
            ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
            with urllib.request.urlopen(self.server + "/readyz", context=ctx, timeout=5) as resp:
                return resp.status == 200
        except Exception:
            return False

    def established(self, crd: str) -> bool:
        out = self.kubectl("get", "crd", crd, "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}")
        return "True" in out

    def ready_nodes(self) -> int:
        out = self.kubectl(
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
        )
        return sum(1 for line in out.split() if line == "True")


def write_kubeconfig(path: Path, server: str, pki: Path, tls_server_name: str = "") -> None:
    """An admin kubeconfig for ``server`` (``tls_server_name`` when the address is not in the serving cert)."""

    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    cluster = {"server": server, "certificate-authority-data": b64("ca.crt")}
    if tls_server_name:
        cluster["tls-server-name"] = tls_server_name
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devcluster", "cluster": cluster}],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")},
            }
        ],
        "contexts": [
            {"name": "devcluster", "context": {"cluster": "devcluster", "user": "admin", "namespace": "default"}}
        ],
        "current-context": "devcluster",
    }
    path.write_text(json.dumps(cfg, indent=2))
    path.chmod(0o600)


def start_apiserver(procs: Supervisor, kube: Kube, etcd_url: str) -> None:
    """kube-apiserver on a free loopback port; writes the admin kubeconfig and waits for /readyz."""
    pki = kube.pki
    port = free_port()
    write_kubeconfig(kube.kubeconfig, f"https://127.0.0.1:{port}", pki)
    comp = procs.spawn(
        "kube-apiserver",
        [
            str(bin_dir() / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={certs.SERVICE_CIDR}",
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            # Endpoints may not hold a loopback address: the apiserver
            # would log an error for its own Service every few seconds.
            "--endpoint-reconciler-type=none",
            # The aggregation layer, for KEDA's metrics adapter: requests are proxied with the
            # front-proxy client certificate, straight to the Service's endpoint (no kube-proxy here).
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            f"--requestheader-allowed-names={certs.FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            "--enable-aggregator-routing=true",
            # MutatingAdmissionPolicy (beta, off by default in 1.35): the tests inject a sidecar
            # into the workers' Deployments the way a service mesh's webhook does.
            "--feature-gates=MutatingAdmissionPolicy=true",
            "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
            "--profiling=false",
            "--v=0",
        ],
    )
    procs.wait("kube-apiserver /readyz", kube.ready, comp, timeout=90)


def start_controller_manager(procs: Supervisor, kube: Kube) -> None:
    kubeconfig, pki = str(kube.kubeconfig), kube.pki
    procs.spawn(
        "kube-controller-manager",
        [
            str(bin_dir() / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--controllers=*",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            # The default 20 QPS makes 1000 Deployments take minutes to get a status.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            f"--horizontal-pod-autoscaler-sync-period={HPA_SYNC_PERIOD}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--profiling=false",
        ],
    )


def start_scheduler(procs: Supervisor, kube: Kube) -> None:
    kubeconfig = str(kube.kubeconfig)
    procs.spawn(
        "kube-scheduler",
        [
            str(bin_dir() / "kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--profiling=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ],
    )
