"""The local cluster as a whole: start, inspect and stop a Kubernetes control plane made of plain processes.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (which
stands in for kubelets) run on 127.0.0.1 with free ports; KEDA and Pulsar
join on demand. Everything the cluster keeps lives under one state
directory. Each component has its own module (etcd, kubernetes, kwok, keda,
pulsar) built on gobuild (Go builds) and procs (processes); this module only
puts them together, and nothing imports it but its users.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from . import certs, etcd, helm, keda, kubernetes, kwok, pulsar
from .base import ClusterError, free_port, log, tail
from .procs import Component, Supervisor, rss_kib

__all__ = ["DEFAULT_DIR", "Cluster", "ClusterError", "free_port"]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO / ".devcluster"


def build_all(keda_too: bool = False, pulsar_too: bool = False, helm_too: bool = False) -> None:
    """Build (or find in the cache) every binary the cluster needs."""
    etcd.build()
    kwok.build()
    kubernetes.build()
    if keda_too:
        keda.build()
    if pulsar_too:
        pulsar.build()
    if helm_too:
        helm.build()


class Cluster:
    def __init__(self, state_dir: Path = DEFAULT_DIR) -> None:
        self.procs = Supervisor(Path(state_dir))
        self.dir = self.procs.dir
        self.pki = self.dir / "pki"
        self.kubeconfig = self.dir / "kubeconfig"
        self.kube = kubernetes.Kube(self.kubeconfig, self.pki)

    # -- access ------------------------------------------------------------------

    @property
    def server(self) -> str:
        return self.kube.server

    def kubectl_path(self) -> str:
        return str(kubernetes.kubectl_path())

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.kube.kubectl(*args, input=input)

    def ready(self) -> bool:
        return self.kube.ready()

    def wait_established(self, crd: str, timeout: float = 60) -> None:
        """Wait until a CRD is Established. Polled: right after its creation a CRD may have no
        conditions at all, and `kubectl wait` then fails at once instead of waiting."""
        self.procs.wait(f"CRD {crd} Established", lambda: self.kube.established(crd), timeout=timeout)

    def fact(self, key: str) -> str:
        """A recorded fact such as ``pulsar_admin_url`` or ``pulsar_url``; '' if unknown."""
        return str(self.procs.fact(key))

    # -- processes -----------------------------------------------------------------

    def components(self) -> list[Component]:
        return self.procs.components()

    def component(self, name: str) -> Component:
        return self.procs.component(name)

    def alive(self, comp: Component) -> bool:
        return self.procs.alive(comp)

    def dead_components(self) -> list[Component]:
        return self.procs.dead()

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Component:
        """Start a process that belongs with the cluster (stopped by ``down``), e.g. the demo's operator."""
        return self.procs.spawn(name, argv, env, cwd)

    def wait(self, what: str, check, comp: Component | None = None, timeout: float = 60) -> None:
        self.procs.wait(what, check, comp, timeout)

    def kill_component(self, name: str, sig: int = signal.SIGKILL, timeout: float = 15) -> Component:
        """Send ``sig`` to component ``name`` (see Supervisor.kill); its record stays for restart_component."""
        return self.procs.kill(name, sig, timeout)

    def restart_component(self, name: str, timeout: float = 90) -> Component:
        """Start the stopped component ``name`` again as it was; waits until it is healthy."""
        checks = {"etcd": etcd.healthy, "kube-apiserver": lambda _comp: self.kube.ready()}
        return self.procs.restart(name, checks.get(name), timeout)

    def stop_component(self, name: str) -> None:
        self.procs.stop_named(name)

    # -- KEDA and Pulsar -------------------------------------------------------------

    def keda_running(self) -> bool:
        return keda.running(self.procs)

    def start_keda(self) -> None:
        """KEDA's operator and metrics adapter, with their CRDs and APIService (built on first use)."""
        keda.start(self.procs, self.kube)

    def uninstall_keda(self) -> None:
        """Stop KEDA and remove its CRDs (and with them every ScaledObject): a cluster without KEDA."""
        keda.uninstall(self.procs, self.kube)

    def install_keda_crds(self) -> None:
        keda.install_crds(self.procs, self.kube)

    def start_pulsar(self) -> str:
        """Pulsar standalone (jars fetched on first use); its admin URL."""
        return pulsar.start(self.procs)

    # -- lifecycle -------------------------------------------------------------------

    def is_up(self) -> bool:
        comps = self.components()
        return bool(comps) and not self.dead_components() and self.ready()

    def up(self, keda: bool = False, pulsar: bool = False) -> None:
        if self.is_up():
            if not self._start_extras(keda, pulsar):
                log(f"cluster already up ({self.server}); nothing to do")
            self._print_usage()
            return
        if self.components():
            self._report_dead()
            log("stopping the remains of the previous cluster before starting afresh")
            self.down(quiet=True)
        start = time.monotonic()
        build_all(keda_too=keda, pulsar_too=pulsar)
        try:
            self._start()
            self._start_extras(keda, pulsar)
        except BaseException:
            # Never leave half a cluster running behind an error.
            self.down(quiet=True)
            raise
        log(f"cluster up in {time.monotonic() - start:.1f}s")
        self._print_usage()

    def _start_extras(self, keda_too: bool, pulsar_too: bool) -> bool:
        """Start KEDA and Pulsar if asked for and not running yet; True if anything started."""
        started = False
        if keda_too and not self.keda_running():
            self.start_keda()
            started = True
        if pulsar_too and not pulsar.running(self.procs):
            self.start_pulsar()
            started = True
        return started

    def _report_dead(self) -> None:
        for comp in self.dead_components():
            log(f"{comp.name} (pid {comp.pid}) is not running; log tail:\n{tail(Path(comp.log))}")

    def _start(self) -> None:
        for sub in ("etcd", "logs", "pki", "keda-certs"):
            path = self.dir / sub
            if path.exists():
                subprocess.run(["rm", "-rf", str(path)], check=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / ".gitignore").write_text("*\n")
        self.procs.save_state({"components": []})
        certs.generate(self.pki)
        etcd_url = etcd.start(self.procs, self.dir / "etcd")
        kubernetes.start_apiserver(self.procs, self.kube, etcd_url)
        kubernetes.start_controller_manager(self.procs, self.kube)
        kubernetes.start_scheduler(self.procs, self.kube)
        kwok.start(self.procs, self.kube)
        self.procs.wait(
            "the default ServiceAccount",
            lambda: bool(self.kubectl("get", "serviceaccount", "default", "-n", "default", "-o", "name").strip()),
        )
        dead = self.dead_components()
        if dead:
            raise ClusterError("; ".join(f"{c.name} exited; log tail:\n{tail(Path(c.log))}" for c in dead))

    def _print_usage(self) -> None:
        if self.fact("pulsar_admin_url") and pulsar.running(self.procs):
            log(f"Pulsar admin API: {self.fact('pulsar_admin_url')} (PULSAR_ADMIN_URL for the operator)")
        log(f"export KUBECONFIG={self.kubeconfig}")
        log(f"kubectl matching the cluster: {self.kubectl_path()}")

    def down(self, quiet: bool = False) -> None:
        comps = self.components()
        if not comps:
            if not quiet:
                log("no cluster is running")
            keda.stop(self.procs)  # a network namespace left by an interrupted run
            return
        self.procs.stop(comps, quiet)
        keda.stop(self.procs)
        if not quiet:
            log(f"stopped {len(comps)} processes")

    def status(self) -> int:
        comps = self.components()
        if not comps:
            log("no cluster is running")
            return 1
        rc = 0
        total = 0
        for comp in comps:
            alive = self.alive(comp)
            rss = rss_kib(comp.pid) if alive else 0
            total += rss
            print(f"{comp.name:<26} pid {comp.pid:<8} {'running' if alive else 'EXITED':<8} {rss / 1024:7.0f} MiB")
            if not alive:
                rc = 1
                print(tail(Path(comp.log)))
        ready = self.ready()
        print(f"{'apiserver /readyz':<26} {'ok' if ready else 'NOT READY'}   total RSS {total / 1024:.0f} MiB")
        if ready:
            print(self.kubectl("get", "nodes"), end="")
        else:
            rc = 1
        self._print_usage()
        return rc
