"""The real KEDA: its operator and its metrics adapter, built from the Go module, with its CRDs.

The operator turns ScaledObjects into HPAs, reports their conditions, and
activates (0 <-> 1) on its polling interval. The adapter serves
``external.metrics.k8s.io`` through an APIService: the HPA controller asks it
for the backlog, it asks the operator (gRPC), the operator asks Pulsar.

The apiserver reaches the adapter through a Service endpoint, and endpoints
cannot be loopback addresses; so the adapter runs in a network namespace of
its own (see netns.py) and listens on its end of a veth pair. From there it
reaches the operator's gRPC service on the host's end of the pair, and the
apiserver through a relay on the same address (tcpforward.py).
"""

from __future__ import annotations

import base64
import socket
import sys
import urllib.request
from pathlib import Path

from . import certs, gobuild, netns, versions
from .base import BuildError, free_port, log
from .kubernetes import Kube, write_kubeconfig
from .procs import Supervisor

NAMESPACE = "keda"
MODULE = "github.com/kedacore/keda/v2"
COMMANDS = {"keda": "cmd/operator", "keda-adapter": "cmd/adapter"}
OPERATOR, ADAPTER, RELAY = "keda", "keda-metrics-apiserver", "keda-apiserver-relay"
ADAPTER_SERVICE = "keda-metrics-apiserver"
ADAPTER_PORT = 6443
APISERVICE = "v1beta1.external.metrics.k8s.io"
HACK = Path(__file__).resolve().parents[1]


def bin_dir() -> Path:
    return gobuild.tool_dir("keda", versions.KEDA) / "bin"


def crds_dir() -> Path:
    return bin_dir() / "crds"


def build() -> Path:
    """Operator, adapter and the CRDs of the very same module version."""
    dest = bin_dir()
    if all((dest / c).exists() for c in COMMANDS) and crds_dir().is_dir():
        return dest
    src = dest.parent / "src"
    log(f"building KEDA {versions.KEDA} (first time only; several minutes)")
    gomod = gobuild.module_gomod(MODULE, versions.KEDA, src)
    gobuild.write_wrapper(src, "keda", {MODULE: versions.KEDA}, gobuild.replace_block(gomod))
    tmp = gobuild.staging_dir(dest)
    for name, pkg in COMMANDS.items():
        gobuild.run_go(
            ["build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp / name), f"{MODULE}/{pkg}"],
            src,
            f"{name} {versions.KEDA}",
        )
    crds = gobuild.module_dir(MODULE, src) / "config" / "crd" / "bases"
    if not crds.is_dir():
        raise BuildError(f"KEDA {versions.KEDA} has no CRDs in {crds}")
    (tmp / "crds").mkdir()
    for path in crds.glob("*.yaml"):
        (tmp / "crds" / path.name).write_bytes(path.read_bytes())
    return gobuild.publish(dest, tmp)


def running(procs: Supervisor) -> bool:
    return all(procs.running(name) for name in (OPERATOR, RELAY, ADAPTER))


def install_crds(procs: Supervisor, kube: Kube) -> None:
    for path in sorted(crds_dir().glob("*.yaml")):
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    procs.wait("CRD scaledobjects.keda.sh Established", lambda: kube.established("scaledobjects.keda.sh"))


def start(procs: Supervisor, kube: Kube) -> None:
    """Start KEDA's operator and metrics adapter and register the adapter's APIService."""
    build()
    stop(procs, kube)
    log("starting KEDA (operator and metrics adapter)")
    install_crds(procs, kube)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    ns = netns.create(str(procs.dir))
    procs.remember(keda_netns=ns.name)
    cert_dir = procs.dir / "keda-certs"
    svc = f"{ADAPTER_SERVICE}.{NAMESPACE}.svc"
    certs.serving(
        kube.pki,
        cert_dir,
        "keda",
        dns=["localhost", svc, f"{svc}.cluster.local", f"keda-operator.{NAMESPACE}.svc"],
        ips=["127.0.0.1", ns.host_ip, ns.inner_ip],
    )
    env = {"WATCH_NAMESPACE": "", "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE, "POD_NAMESPACE": NAMESPACE}
    grpc = f"{ns.host_ip}:{free_port(ns.host_ip)}"
    health = free_port()
    operator = procs.spawn(
        OPERATOR,
        [
            str(bin_dir() / "keda"),
            f"--kubeconfig={kube.kubeconfig}",
            "--leader-elect=false",
            f"--cert-dir={cert_dir}",
            "--enable-cert-rotation=false",
            f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{health}",
            f"--metrics-service-bind-address={grpc}",
            "--zap-log-level=info",
        ],
        env={**env, "OPERATOR_NAME": "keda-operator"},
    )
    procs.wait(
        "KEDA operator /readyz",
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=2).status == 200,
        operator,
        timeout=90,
    )
    # The adapter reaches the apiserver through the relay on the host's end of the pair.
    relay_at = f"{ns.host_ip}:{free_port(ns.host_ip)}"
    api_port = kube.server.rsplit(":", 1)[1]
    relay = procs.spawn(
        RELAY,
        [sys.executable, "-m", "devcluster.tcpforward", relay_at, f"127.0.0.1:{api_port}"],
        env={"PYTHONPATH": str(HACK)},
        binary="devcluster.tcpforward",
    )
    procs.wait("the apiserver relay to listen", lambda: _connects(relay_at), relay)
    adapter_kubeconfig = procs.dir / "keda-adapter.kubeconfig"
    # The apiserver's certificate names localhost, not the relay's address.
    write_kubeconfig(adapter_kubeconfig, f"https://{relay_at}", kube.pki, tls_server_name="localhost")
    kc = str(adapter_kubeconfig)
    adapter = procs.spawn(
        ADAPTER,
        [
            *ns.exec_prefix(),
            str(bin_dir() / "keda-adapter"),
            f"--kubeconfig={kc}",
            f"--lister-kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--bind-address={ns.inner_ip}",
            f"--secure-port={ADAPTER_PORT}",
            f"--cert-dir={cert_dir}",
            f"--tls-cert-file={cert_dir / 'tls.crt'}",
            f"--tls-private-key-file={cert_dir / 'tls.key'}",
            f"--metrics-service-address={grpc}",
            f"--port={free_port()}",
            "--zap-log-level=info",
        ],
        env={**env, "KUBECONFIG": kc},
        binary="keda-adapter",
    )
    kube.apply(*adapter_objects(ns.inner_ip, (kube.pki / "ca.crt").read_bytes()))
    procs.wait("the external metrics APIService to be Available", lambda: _available(kube), adapter, timeout=90)
    log(f"KEDA is running; its metrics adapter at {ns.inner_ip}:{ADAPTER_PORT}")


def _connects(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=1):
        return True


def _available(kube: Kube) -> bool:
    status = kube.kubectl(
        "get", "apiservice", APISERVICE, "-o", "jsonpath={.status.conditions[?(@.type=='Available')].status}"
    )
    return status == "True"


def adapter_objects(ip: str, ca: bytes) -> list[dict]:
    """The Service, its endpoint (the adapter's address), the APIService, and the HPA controller's right to read."""
    labels = {"app.kubernetes.io/part-of": "devcluster"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE, "labels": labels},
            # No selector: the endpoint below is written by hand (no pod runs the adapter).
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": ADAPTER_PORT}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": ADAPTER_SERVICE,
                "namespace": NAMESPACE,
                "labels": {
                    **labels,
                    "kubernetes.io/service-name": ADAPTER_SERVICE,
                    "endpointslice.kubernetes.io/managed-by": "devcluster",
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": "https", "port": ADAPTER_PORT, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE, "labels": labels},
            "spec": {
                "service": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE, "port": 443},
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "caBundle": base64.b64encode(ca).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "keda-external-metrics-reader", "labels": labels},
            "rules": [
                {"apiGroups": ["external.metrics.k8s.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "keda-hpa-controller-external-metrics", "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "keda-external-metrics-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "horizontal-pod-autoscaler", "namespace": "kube-system"}],
        },
    ]


def stop(procs: Supervisor, kube: Kube | None = None) -> None:
    """Stop KEDA's processes and remove its network namespace; with ``kube``, also its APIService
    (an APIService nobody answers would stall every namespace deletion)."""
    if kube is not None and kube.ready():
        kube.kubectl("delete", "apiservice", APISERVICE, "--ignore-not-found")
    for name in (ADAPTER, RELAY, OPERATOR):
        procs.stop_named(name)
    netns.delete(str(procs.fact("keda_netns")))


def uninstall(procs: Supervisor, kube: Kube) -> None:
    """Stop KEDA and remove its CRDs (and with them every ScaledObject): a cluster without KEDA."""
    stop(procs, kube)
    for path in sorted(crds_dir().glob("*.yaml")):
        kube.kubectl("delete", "--ignore-not-found", "--wait=true", "-f", str(path))
