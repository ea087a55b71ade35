"""Start, inspect and stop a local Kubernetes control plane made of plain processes.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (which
stands in for kubelets) run on 127.0.0.1 with free ports. Everything the
cluster keeps lives under one state directory; ``state.json`` records each
process's pid so that ``down`` stops exactly what ``up`` started, and how
it was started so that fault-injection tests can kill one component
(``kill_component``) and start it again as it was (``restart_component``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import build, certs

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO / ".devcluster"
NODE_COUNT = 2


def _log(msg: str) -> None:
    print(f"[devcluster] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int, binary: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # A zombie or a recycled pid is not our component.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and binary.encode() in cmdline


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Component:
    name: str
    pid: int
    binary: str
    log: str
    # How to start it again (restart_component); empty in state files written before they were recorded.
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # overrides on top of os.environ
    cwd: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> Component:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class ClusterError(RuntimeError):
    pass


class Cluster:
    def __init__(self, state_dir: Path = DEFAULT_DIR) -> None:
        self.dir = Path(state_dir).resolve()
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.kubeconfig = self.dir / "kubeconfig"
        self.state_file = self.dir / "state.json"
        # Processes started by this invocation: poll() tells their fate without /proc races.
        self._procs: dict[int, subprocess.Popen] = {}

    # -- state ---------------------------------------------------------------

    def load_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.rename(self.state_file)

    def components(self) -> list[Component]:
        return [Component.from_dict(c) for c in self.load_state().get("components", [])]

    def component(self, name: str) -> Component:
        """The (last) recorded component called ``name``, running or not."""
        for comp in reversed(self.components()):
            if comp.name == name:
                return comp
        raise ClusterError(f"no component named {name!r} in {self.state_file}")

    def _record(self, comp: Component, replaces: int | None = None) -> None:
        """Append ``comp`` to the state, or put it in place of the record with pid ``replaces``."""
        state = self.load_state()
        comps = state.setdefault("components", [])
        for i, old in enumerate(comps):
            if replaces is not None and old.get("pid") == replaces:
                comps[i] = asdict(comp)
                break
        else:
            comps.append(asdict(comp))
        self.save_state(state)

    @property
    def server(self) -> str:
        return self.load_state().get("server", "")

    def kubectl_path(self) -> str:
        return str(build.kubernetes_bin() / "kubectl")

    # -- process handling -----------------------------------------------------

    def alive(self, comp: Component) -> bool:
        proc = self._procs.get(comp.pid)
        if proc is not None:
            return proc.poll() is None
        return _alive(comp.pid, comp.binary)

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Component:
        comp = self._popen(name, list(argv), dict(env or {}), Path(cwd or self.dir))
        self._record(comp)
        return comp

    def _popen(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Component:
        """Start a process in its own session (so a signal reaches its whole group), logging to logs/<name>.log."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env={**os.environ, **env},
                start_new_session=True,
            )
        self._procs[proc.pid] = proc
        return Component(
            name=name, pid=proc.pid, binary=Path(argv[0]).name, log=str(log), argv=argv, env=env, cwd=str(cwd)
        )

    # -- fault injection --------------------------------------------------------

    def kill_component(self, name: str, sig: int = signal.SIGKILL, timeout: float = 15) -> Component:
        """Send ``sig`` to the process group of component ``name``; its record stays for restart_component.

        SIGKILL and SIGTERM wait until the process is gone (ClusterError after ``timeout`` s); other
        signals (SIGSTOP, SIGCONT, ...) are only sent. A component that is not running is left alone:
        fine for SIGKILL/SIGTERM (it is gone already), a ClusterError for any other signal.
        """
        comp = self.component(name)
        if not self.alive(comp):
            if sig in (signal.SIGKILL, signal.SIGTERM):
                return comp
            raise ClusterError(f"{name} (pid {comp.pid}) is not running; cannot send {signal.Signals(sig).name}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(comp.pid, sig)
            if sig == signal.SIGTERM:
                # A stopped process would keep SIGTERM pending forever.
                os.killpg(comp.pid, signal.SIGCONT)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            deadline = time.monotonic() + timeout
            while self.alive(comp):
                if time.monotonic() >= deadline:
                    sent = signal.Signals(sig).name
                    raise ClusterError(f"{name} (pid {comp.pid}) still running {timeout:.0f}s after {sent}")
                time.sleep(0.05)
        return comp

    def restart_component(self, name: str, timeout: float = 90) -> Component:
        """Start the stopped component ``name`` again with its recorded argv, env and cwd.

        Same ports, same data (the etcd data dir is kept as it is); the log file is appended to.
        The new pid replaces the old record in state.json. Waits until it is healthy: etcd answers
        /health, kube-apiserver /readyz, anything else stays alive for 1 s.
        """
        old = self.component(name)
        if self.alive(old):
            raise ClusterError(f"{name} (pid {old.pid}) is still running; kill_component it first")
        if not old.argv:
            raise ClusterError(f"{name} was recorded without its command line (older state.json); cannot restart")
        self._procs.pop(old.pid, None)
        comp = self._popen(name, old.argv, old.env, Path(old.cwd or self.dir))
        self._record(comp, replaces=old.pid)
        _log(f"restarted {name} (pid {old.pid} -> {comp.pid})")
        self._wait_healthy(comp, timeout)
        return comp

    def _wait_healthy(self, comp: Component, timeout: float) -> None:
        if comp.name == "etcd":
            url = _flag(comp.argv, "--advertise-client-urls") or _flag(comp.argv, "--listen-client-urls")
            health = url.split(",")[0].rstrip("/") + "/health"
            self.wait(
                "etcd health", lambda: urllib.request.urlopen(health, timeout=2).status == 200, comp, timeout=timeout
            )
        elif comp.name == "kube-apiserver":
            self.wait("kube-apiserver /readyz", self.ready, comp, timeout=timeout)
        else:
            settled = time.monotonic() + 1
            self.wait(f"{comp.name} to stay up for 1s", lambda: time.monotonic() >= settled, comp, timeout=timeout)

    def wait(self, what: str, check, comp: Component | None = None, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if comp and not self.alive(comp):
                raise ClusterError(f"{comp.name} exited while waiting for {what}; log tail:\n{tail(Path(comp.log))}")
            try:
                if check():
                    return
            except Exception:
                pass
            time.sleep(0.2)
        detail = f"; {comp.name} log tail:\n{tail(Path(comp.log))}" if comp else ""
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _get(self, path: str) -> tuple[int, bytes]:
        req = urllib.request.Request(self.server + path)
        with urllib.request.urlopen(req, context=self._ssl(), timeout=5) as resp:
            return resp.status, resp.read()

    def ready(self) -> bool:
        try:
            return self._get("/readyz")[0] == 200
        except Exception:
            return False

    def kubectl(self, *args: str, input: str | None = None) -> str:
        res = subprocess.run(
            [self.kubectl_path(), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout

    # -- lifecycle -------------------------------------------------------------

    def wait_established(self, crd: str, timeout: float = 60) -> None:
        """Wait until a CRD is Established. Polled: right after its creation a CRD may have no
        conditions at all, and `kubectl wait` then fails at once instead of waiting."""
        self.wait(
            f"CRD {crd} Established",
            lambda: (
                "True"
                in self.kubectl(
                    "get", "crd", crd, "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}"
                )
            ),
            timeout=timeout,
        )

    def dead_components(self) -> list[Component]:
        return [c for c in self.components() if not self.alive(c)]

    def is_up(self) -> bool:
        comps = self.components()
        return bool(comps) and not self.dead_components() and self.ready()

    def up(self, keda: bool = False, pulsar: bool = False) -> None:
        if self.is_up():
            if not self._start_extras(keda, pulsar):
                _log(f"cluster already up ({self.server}); nothing to do")
            self._print_usage()
            return
        if self.components():
            self._report_dead()
            _log("stopping the remains of the previous cluster before starting afresh")
            self.down(quiet=True)
        start = time.monotonic()
        build.build_all(keda=keda)
        try:
            self._start()
            self._start_extras(keda, pulsar)
        except BaseException:
            # Never leave half a cluster running behind an error.
            self.down(quiet=True)
            raise
        _log(f"cluster up in {time.monotonic() - start:.1f}s")
        self._print_usage()

    def _start_extras(self, keda: bool, pulsar: bool) -> bool:
        """Start KEDA and Pulsar if asked for and not running yet; True if anything started."""
        from . import keda as keda_mod
        from . import pulsar as pulsar_mod

        started = False
        if keda and not keda_mod.running(self):
            keda_mod.start(self)
            started = True
        if pulsar and not pulsar_mod.running(self):
            pulsar_mod.start(self)
            started = True
        return started

    def _report_dead(self) -> None:
        for comp in self.dead_components():
            _log(f"{comp.name} (pid {comp.pid}) is not running; log tail:\n{tail(Path(comp.log))}")

    def _start(self) -> None:
        for sub in ("etcd", "logs", "pki"):
            path = self.dir / sub
            if path.exists():
                subprocess.run(["rm", "-rf", str(path)], check=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / ".gitignore").write_text("*\n")
        certs.generate(self.pki)
        kbin = build.kubernetes_bin()
        api_port, etcd_port, peer_port = free_port(), free_port(), free_port()
        self.save_state({"server": f"https://127.0.0.1:{api_port}", "components": []})
        self._write_kubeconfig()

        etcd = self.spawn(
            "etcd",
            [
                str(build.etcd_bin() / "etcd"),
                "--name=devcluster",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=devcluster=http://127.0.0.1:{peer_port}",
                "--listen-metrics-urls=",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
        )
        self.wait(
            "etcd health",
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{etcd_port}/health", timeout=2).status == 200,
            etcd,
        )
        pki = self.pki
        api = self.spawn(
            "kube-apiserver",
            [
                str(kbin / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
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
                "--profiling=false",
                "--v=0",
            ],
        )
        self.wait("kube-apiserver /readyz", self.ready, api, timeout=90)
        kubeconfig = str(self.kubeconfig)
        self.spawn(
            "kube-controller-manager",
            [
                str(kbin / "kube-controller-manager"),
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
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--profiling=false",
            ],
        )
        self.spawn(
            "kube-scheduler",
            [
                str(kbin / "kube-scheduler"),
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
        self.spawn(
            "kwok",
            [
                str(build.kwok_bin() / "kwok"),
                f"--kubeconfig={kubeconfig}",
                "--manage-all-nodes=true",
                "--server-address=127.0.0.1:" + str(free_port()),
                "--node-ip=127.0.0.1",
                "--cidr=10.244.0.1/16",
            ],
        )
        self.kubectl("apply", "-f", "-", input=_nodes_manifest(NODE_COUNT))
        self.wait(f"{NODE_COUNT} Ready nodes", lambda: self._ready_nodes() >= NODE_COUNT, timeout=60)
        self.wait(
            "the default ServiceAccount",
            lambda: bool(self.kubectl("get", "serviceaccount", "default", "-n", "default", "-o", "name").strip()),
            timeout=60,
        )
        self._report_dead_or_raise()

    def _report_dead_or_raise(self) -> None:
        dead = self.dead_components()
        if dead:
            raise ClusterError("; ".join(f"{c.name} exited; log tail:\n{tail(Path(c.log))}" for c in dead))

    def _ready_nodes(self) -> int:
        out = self.kubectl(
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
        )
        return sum(1 for line in out.split() if line == "True")

    def _write_kubeconfig(self) -> None:
        def b64(name: str) -> str:
            return base64.b64encode((self.pki / name).read_bytes()).decode()

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "devcluster", "cluster": {"server": self.server, "certificate-authority-data": b64("ca.crt")}}
            ],
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
        self.kubeconfig.write_text(json.dumps(cfg, indent=2))
        self.kubeconfig.chmod(0o600)

    def _print_usage(self) -> None:
        if self.load_state().get("pulsar_admin_url") and any(c.name == "pulsar" for c in self.components()):
            _log(f"Pulsar admin API: {self.load_state()['pulsar_admin_url']} (PULSAR_ADMIN_URL for the operator)")
        _log(f"export KUBECONFIG={self.kubeconfig}")
        _log(f"kubectl matching the cluster: {self.kubectl_path()}")

    def down(self, quiet: bool = False) -> None:
        comps = self.components()
        if not comps:
            if not quiet:
                _log("no cluster is running")
            return
        self._stop(comps, quiet)
        if not quiet:
            _log(f"stopped {len(comps)} processes")

    def stop_component(self, name: str) -> None:
        """Stop one process of the cluster (e.g. KEDA) and forget it."""
        self._stop([c for c in self.components() if c.name == name], quiet=True)

    def _stop(self, comps: list[Component], quiet: bool) -> None:
        """SIGTERM in reverse start order, SIGKILL what is left after 15 s; then forget them."""
        for comp in reversed(comps):
            if not self.alive(comp):
                if not quiet:
                    _log(f"{comp.name} (pid {comp.pid}) had already exited; log tail:\n{tail(Path(comp.log))}")
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(comp.pid, signal.SIGTERM)
                # A component stopped by a fault-injection test would keep SIGTERM pending.
                os.killpg(comp.pid, signal.SIGCONT)
        deadline = time.monotonic() + 15
        for comp in reversed(comps):
            while self.alive(comp) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.alive(comp):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(comp.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(self.alive(c) for c in comps) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [c for c in comps if self.alive(c)]
        if survivors:
            raise ClusterError(f"could not stop: {', '.join(f'{c.name}({c.pid})' for c in survivors)}")
        stopped = {c.pid for c in comps}
        state = self.load_state()
        state["components"] = [c for c in state.get("components", []) if c["pid"] not in stopped]
        self.save_state(state)

    def status(self) -> int:
        comps = self.components()
        if not comps:
            _log("no cluster is running")
            return 1
        rc = 0
        total = 0
        for comp in comps:
            alive = self.alive(comp)
            rss = _rss_kib(comp.pid) if alive else 0
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


def _flag(argv: list[str], name: str) -> str:
    """The value of ``--name=value`` in argv, or ''."""
    prefix = name + "="
    return next((a[len(prefix) :] for a in argv if a.startswith(prefix)), "")


def _nodes_manifest(count: int) -> str:
    items = []
    for i in range(count):
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"kwok-node-{i}",
                    "labels": {"type": "kwok", "kubernetes.io/hostname": f"kwok-node-{i}", "kubernetes.io/os": "linux"},
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "250"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "250"},
                },
            }
        )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
