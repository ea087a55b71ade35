"""The processes of the local cluster: started, recorded by pid, checked, killed, restarted, stopped.

``state.json`` in the state directory records each process (pid, how it was
started) so that ``down`` stops exactly what ``up`` started, and so that a
fault-injection test can kill one component and start it again as it was.
Other facts about the cluster (its server URL, Pulsar's addresses, the
network namespace) are kept in the same file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .base import ClusterError, log, tail


def _alive(pid: int, binary: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # A zombie or a recycled pid is not our component.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and binary.encode() in cmdline


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Component:
    name: str
    pid: int
    binary: str
    log: str
    # How to start it again (Supervisor.restart); empty in state files written before they were recorded.
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # overrides on top of os.environ
    cwd: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> Component:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Supervisor:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir).resolve()
        self.logs = self.dir / "logs"
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
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.rename(self.state_file)

    def remember(self, **facts: object) -> None:
        """Record facts about the cluster (e.g. an address) next to its processes."""
        state = self.load_state()
        state.update(facts)
        self.save_state(state)

    def fact(self, key: str, default: object = "") -> object:
        return self.load_state().get(key, default)

    def components(self) -> list[Component]:
        return [Component.from_dict(c) for c in self.load_state().get("components", [])]

    def component(self, name: str) -> Component:
        """The (last) recorded component called ``name``, running or not."""
        for comp in reversed(self.components()):
            if comp.name == name:
                return comp
        raise ClusterError(f"no component named {name!r} in {self.state_file}")

    def running(self, name: str) -> bool:
        return any(c.name == name and self.alive(c) for c in self.components())

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

    # -- processes -------------------------------------------------------------

    def alive(self, comp: Component) -> bool:
        proc = self._procs.get(comp.pid)
        if proc is not None:
            return proc.poll() is None
        return _alive(comp.pid, comp.binary)

    def dead(self) -> list[Component]:
        return [c for c in self.components() if not self.alive(c)]

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        binary: str = "",
    ) -> Component:
        """Start ``argv`` as component ``name``. ``binary`` is the program the pid ends up running
        (when ``argv`` starts with a launcher that execs it, e.g. ``ip netns exec``)."""
        comp = self._popen(name, list(argv), dict(env or {}), Path(cwd or self.dir), binary)
        self._record(comp)
        return comp

    def _popen(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, binary: str = "") -> Component:
        """Start a process in its own session (so a signal reaches its whole group), logging to logs/<name>.log."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        with open(log_path, "ab") as out:
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
            name=name,
            pid=proc.pid,
            binary=binary or Path(argv[0]).name,
            log=str(log_path),
            argv=argv,
            env=env,
            cwd=str(cwd),
        )

    def wait(self, what: str, check: Callable[[], bool], comp: Component | None = None, timeout: float = 60) -> None:
        """Poll ``check`` until it is true; a ClusterError (with ``comp``'s log tail) if ``comp``
        dies or time runs out."""
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

    # -- fault injection --------------------------------------------------------

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 15) -> Component:
        """Send ``sig`` to the process group of component ``name``; its record stays for ``restart``.

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

    def restart(self, name: str, healthy: Callable[[Component], bool] | None = None, timeout: float = 90) -> Component:
        """Start the stopped component ``name`` again with its recorded argv, env and cwd.

        Same ports, same data; the log file is appended to. The new pid replaces the old record.
        Waits until ``healthy(comp)``, or without one until it has stayed alive for 1 s.
        """
        old = self.component(name)
        if self.alive(old):
            raise ClusterError(f"{name} (pid {old.pid}) is still running; kill it first")
        if not old.argv:
            raise ClusterError(f"{name} was recorded without its command line (older state.json); cannot restart")
        self._procs.pop(old.pid, None)
        comp = self._popen(name, old.argv, old.env, Path(old.cwd or self.dir), old.binary)
        self._record(comp, replaces=old.pid)
        log(f"restarted {name} (pid {old.pid} -> {comp.pid})")
        if healthy is not None:
            self.wait(f"{name} to be healthy", lambda: healthy(comp), comp, timeout=timeout)
        else:
            settled = time.monotonic() + 1
            self.wait(f"{name} to stay up for 1s", lambda: time.monotonic() >= settled, comp, timeout=timeout)
        return comp

    # -- stopping ----------------------------------------------------------------

    def stop(self, comps: list[Component], quiet: bool = True) -> None:
        """SIGTERM in reverse start order, SIGKILL what is left after 15 s; then forget them."""
        for comp in reversed(comps):
            if not self.alive(comp):
                if not quiet:
                    log(f"{comp.name} (pid {comp.pid}) had already exited; log tail:\n{tail(Path(comp.log))}")
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

    def stop_named(self, name: str) -> None:
        """Stop every process recorded as ``name`` and forget them."""
        self.stop([c for c in self.components() if c.name == name])


def flag(argv: list[str], name: str) -> str:
    """The value of ``--name=value`` in argv, or ''."""
    prefix = name + "="
    return next((a[len(prefix) :] for a in argv if a.startswith(prefix)), "")
