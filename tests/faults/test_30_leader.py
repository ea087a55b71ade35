"""Leader election under faults: a frozen leader, and a holder whose clock is an hour off.

Both follow client-go's rules, as the operator claims to (see aimodel_operator.leader):

- a leader frozen (SIGSTOP) past its lease loses it to the follower, and once
  thawed it makes not one write more (its writes are fenced by its own
  monotonic clock) and exits with code 1;
- a lease whose ``renewTime`` is an hour in the past but which keeps changing
  is live: expiry is judged from our clock since we saw the record change,
  never from the holder's clock. Once it stops changing, it is taken over.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import threading
import time

from fault_invariants import LOCAL, assert_converged, assert_writes_flat, model_manifest

from faults.faultproxy import FaultProxy, Request
from kube_helpers import Kubectl, OperatorProcess, wait_for

LEASE = "aimodel-operator-leader"
LEASE_SECONDS = 15


def lease_spec(k: Kubectl) -> dict:
    return ((k.get("lease", LEASE) or {}).get("spec")) or {}


def holder(k: Kubectl) -> str | None:
    return lease_spec(k).get("holderIdentity")


def leader_args(namespace: str) -> tuple[str, ...]:
    # The Lease lives in the test's namespace: private to this test.
    return ("--leader-elect", f"--leader-election-namespace={namespace}")


def lease_writes(writes: list[Request]) -> list[Request]:
    return [w for w in writes if f"/leases/{LEASE}" in w.path or w.path.split("?")[0].endswith("/leases")]


def summary(writes: list[Request]) -> str:
    lease = len(lease_writes(writes))
    return f"{len(writes)} ({lease} on the Lease, {len(writes) - lease} other)"


class WorkWrites:
    """An operator's write counter without its lease renewals (a leader renews every 2 s, forever).

    Duck-types OperatorProcess for assert_writes_flat, which reads only ``api_writes()``.
    """

    def __init__(self, op: OperatorProcess) -> None:
        self.op = op

    def api_writes(self) -> float:
        return sum(
            v
            for key, v in self.op.metrics().items()
            if key.startswith("aimodel_operator_api_writes_total{") and 'resource="leases"' not in key
        )


def deployments_of(k: Kubectl, models: dict) -> dict[str, tuple[str, str]]:
    """Each model's Deployment: (image, RES_TOPIC_NAME), from the API server."""
    out = {}
    for name in models:
        container = k.get("deployment", f"{name}-deployment")["spec"]["template"]["spec"]["containers"][0]
        topic = next((e.get("value") for e in container.get("env") or [] if e["name"] == "RES_TOPIC_NAME"), None)
        out[name] = (container["image"], topic)
    return out


def wanted(models: dict, instance: str) -> dict[str, tuple[str, str]]:
    return {name: (spec["image"], f"res-{instance}") for name, spec in models.items()}


def test_frozen_leader_makes_no_write_after_the_takeover(operator_process, kubeconfig, k, namespace, tmp_path):
    operator_process.stop()
    proxies: dict[str, FaultProxy] = {}
    ops: dict[str, OperatorProcess] = {}
    frozen: OperatorProcess | None = None
    try:
        # Each instance through its own proxy: the proxy's records are that instance's requests.
        for name in ("a", "b"):
            proxies[name] = FaultProxy(kubeconfig).start()
            (tmp_path / name).mkdir()
            ops[name] = OperatorProcess(proxies[name].kubeconfig_path(tmp_path / name), tmp_path / name)
            # A topic of its own: each instance wants every Deployment a little different, so a
            # thawed old leader disagrees with all the new leader did (it has work, for sure).
            # --verbose: its write gate's refusals ("not leading") are logged at debug level.
            env = {"POD_NAME": name, "RES_TOPIC_NAME": f"res-{name}"}
            ops[name].start(env=env, extra_args=(*leader_args(namespace), "--verbose"))
        old = wait_for("a leader", lambda: (h := holder(k)) in ops and h)
        new = next(n for n in ops if n != old)
        leader, follower = ops[old], ops[new]
        started = time.monotonic()

        models = {f"m{i}": dict(LOCAL) for i in range(1, 4)}
        for name, spec in models.items():
            k.apply(model_manifest(name, spec))
        assert_converged(k, models)
        assert deployments_of(k, models) == wanted(models, old)
        assert_writes_flat(WorkWrites(leader))
        before_freeze = leader.api_writes()
        assert proxies[new].writes() == [], "the follower wrote while the leader was alive"

        # Freeze just after a lease renewal answered (the next is ~2 s away) and with no
        # reconcile running (writes are flat): nothing of the leader's is half-sent.
        def just_renewed() -> bool:
            renewals = [w for w in lease_writes(proxies[old].writes()) if w.method == "PUT"]
            return bool(renewals) and 0.1 <= time.monotonic() - renewals[-1].time <= 0.8

        wait_for("a moment just after the leader renewed its lease", just_renewed, timeout=10, interval=0.02)
        os.kill(leader.proc.pid, signal.SIGSTOP)
        frozen = leader
        frozen_at = time.monotonic()

        # Work a thawed old leader would want to do: new models, and changed ones.
        for i in range(4, 7):
            models[f"m{i}"] = dict(LOCAL)
            k.apply(model_manifest(f"m{i}", models[f"m{i}"]))
        for name in ("m1", "m2"):
            models[name] = {**LOCAL, "image": "user/image:changed"}
            k.apply(model_manifest(name, models[name]))

        wait_for(f"{new} to take the lease", lambda: holder(k) == new, timeout=LEASE_SECONDS + 25, interval=0.05)
        takeover = time.monotonic()
        # Not before the lease, unchanged, lasted its full duration on the follower's clock.
        assert takeover - frozen_at >= LEASE_SECONDS - 2.5, f"taken after {takeover - frozen_at:.1f}s"
        assert_converged(k, models)
        wait_for(f"every Deployment as {new} wants it", lambda: deployments_of(k, models) == wanted(models, new))

        # Thawed, the old leader's first look at the lease is held 1.5 s (its renewal attempt
        # allows 2 s): meanwhile its workers act on what they saw change, and only its own
        # clock (the write gate) stands between them and the API server.
        proxies[old].delay_responses("GET", f"/leases/{LEASE}", 1.5)
        os.kill(leader.proc.pid, signal.SIGCONT)
        frozen = None
        thawed = time.monotonic()
        wait_for("the thawed old leader to exit", lambda: leader.proc.poll() is not None, timeout=30)
        exited = time.monotonic()
        rc = leader.proc.returncode
        log = leader.log_path.read_text(errors="replace")
        assert rc == 1, f"old leader exited with {rc}:\n{leader.log_tail()}"
        # Stopped as a leader that lost: its window ran out ("lost lease"), or it saw the new holder.
        assert "lost lease" in log or f"lease held by {new}" in log, leader.log_tail()
        # Thawed, it either stepped down before any reconcile ran (its renew deadline had passed),
        # or its workers ran first and the write fence refused them (logged at debug level).
        refused = sum("not leading" in line for line in log.splitlines())
        assert refused >= 1 or "renew deadline passed" in log, leader.log_tail(60)
        print(f"thawed old leader: {refused} writes refused by the fence before it stopped")

        old_writes, new_writes = proxies[old].writes(), proxies[new].writes()
        # The follower's first write is its takeover of the lease (T is when the test saw it, a bit later).
        assert new_writes and f"/leases/{LEASE}" in new_writes[0].path, new_writes[:3]
        took = new_writes[0].time
        assert took < takeover
        old_after = [w for w in old_writes if w.time >= takeover]
        print(
            f"\nleader {old}: writes before freeze {summary([w for w in old_writes if w.time < frozen_at])} "
            f"(metrics {before_freeze:.0f}), frozen..takeover "
            f"{summary([w for w in old_writes if frozen_at <= w.time < takeover])}, after takeover {summary(old_after)}"
            f"; {refused} reconciles refused 'not leading' after the thaw, exit code {rc}"
            f"\nfollower {new}: writes before its takeover PUT {summary([w for w in new_writes if w.time < took])}, "
            f"before T {summary([w for w in new_writes if w.time < takeover])}, "
            f"after T {summary([w for w in new_writes if w.time >= takeover])}"
            f"\ntimes: leader elected->freeze {frozen_at - started:.1f}s, "
            f"freeze->takeover PUT {took - frozen_at:.1f}s, "
            f"->seen (T) {takeover - took:.2f}s, T->thaw {thawed - takeover:.1f}s, thaw->exit {exited - thawed:.1f}s"
        )
        assert old_after == [], f"the old leader wrote after the takeover: {old_after}"
        assert [w for w in old_writes if w.time >= took] == [], "the old leader wrote after the takeover PUT"

        assert_converged(k, models)
        assert deployments_of(k, models) == wanted(models, new), "a Deployment was changed by the old leader"
        flat = assert_writes_flat(WorkWrites(follower))
        new_after = [w for w in proxies[new].writes() if w.time >= takeover]
        print(
            f"follower {new}: flat at {flat:.0f} writes besides the Lease (metrics); "
            f"{summary(new_after)} through its proxy since the takeover"
        )
        assert holder(k) == new
    finally:
        if frozen is not None and frozen.proc is not None:
            os.kill(frozen.proc.pid, signal.SIGCONT)  # else stop() waits 20 s on a process that cannot act
        for op in ops.values():
            op.stop()
        for proxy in proxies.values():
            proxy.stop()


def skewed_time() -> str:
    """Now, as seen by a holder whose clock is an hour behind (microseconds: each call differs)."""
    return (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SkewedHolder:
    """Keeps a Lease held by ``other`` changing every ``period`` s, each renewTime an hour old."""

    def __init__(self, k: Kubectl, period: float = 2.0) -> None:
        self.k = k
        self.period = period
        self.renewed: list[float] = []  # monotonic times of acknowledged renewals
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="skewed-holder", daemon=True)

    def start(self) -> None:
        now = skewed_time()
        self.k(
            "create",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": LEASE},
                    "spec": {
                        "holderIdentity": "other",
                        "leaseDurationSeconds": LEASE_SECONDS,
                        "acquireTime": now,
                        "renewTime": now,
                        "leaseTransitions": 0,
                    },
                }
            ),
        )
        self.renewed.append(time.monotonic())
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            patch = json.dumps({"spec": {"holderIdentity": "other", "renewTime": skewed_time()}})
            res = self.k.run("patch", "lease", LEASE, "--type=merge", "-p", patch, check=False)
            if res.returncode == 0:
                self.renewed.append(time.monotonic())
            else:
                self.failures.append(res.stderr.strip())

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=150)

    def max_gap(self) -> float:
        times = [*self.renewed, time.monotonic()]
        return max(b - a for a, b in itertools.pairwise(times))


def test_a_skewed_clock_does_not_steal_a_live_lease(crds_installed, k, namespace, proxy, tmp_path):
    identity = "skew-test-operator"
    other = SkewedHolder(k)
    op = OperatorProcess(proxy.kubeconfig_path(tmp_path), tmp_path)
    try:
        other.start()
        op.start(env={"POD_NAME": identity}, extra_args=leader_args(namespace))

        # The observation window: a lease whose renewTime is an hour old, but which keeps
        # changing, stays the other's. Fail at the first sight of anything else.
        hold, polls = 25.0, 0
        window = time.monotonic()
        while time.monotonic() - window < hold:
            spec = lease_spec(k)
            assert spec.get("holderIdentity") == "other", f"after {time.monotonic() - window:.1f}s: {spec}"
            assert op.api_writes() == 0, f"the operator wrote: {op.metrics()}"
            assert proxy.writes() == [], f"the operator wrote: {proxy.writes()}"
            assert op.proc.poll() is None, op.log_tail()
            polls += 1
            time.sleep(0.25)  # poll interval inside the deliberate observation window
        # The premise held: the record really changed all along (else taking it would be right).
        gap = other.max_gap()
        assert gap < LEASE_SECONDS / 2, f"renewals {other.renewed}, failures {other.failures}"
        lease_reads = [r for r in proxy.requests(window) if r.method == "GET" and f"/leases/{LEASE}" in r.path]
        assert len(lease_reads) >= hold / 2 / 2, f"the operator hardly looked at the lease: {len(lease_reads)}"

        other.stop()
        last_renewal = other.renewed[-1]
        wait_for(f"{identity} to take the stale lease", lambda: holder(k) == identity, timeout=40, interval=0.1)
        taken = time.monotonic() - last_renewal
        writes = proxy.writes()
        print(
            f"\nhold {hold:.0f}s: {polls} polls, {len(other.renewed)} renewals by 'other' (max gap "
            f"{gap:.1f}s, {len(other.failures)} failed), {len(lease_reads)} lease reads by the "
            f"operator, 0 writes; taken {taken:.1f}s after the last renewal; operator writes then: "
            f"{[(w.method, w.path, w.status) for w in writes]}"
        )
        # Taken only once the record had been unchanged a whole lease duration on the operator's clock.
        assert taken >= LEASE_SECONDS - 1, f"taken {taken:.1f}s after the last renewal"
        # Nothing written before the lease was taken. Once it leads, the operator may reconcile
        # models left behind by earlier tests (the cluster is shared), so later writes may be
        # anything; the first one is the takeover.
        assert writes and f"/leases/{LEASE}" in min(writes, key=lambda w: w.time).path, writes
        assert op.proc.poll() is None, op.log_tail()
    finally:
        other.stop()
        op.stop()


def test_a_leader_stalled_past_its_renew_deadline_steps_down(operator_process, kubeconfig, k, namespace, tmp_path):
    """Frozen longer than the renew deadline (10 s) but shorter than the lease (15 s): nobody took
    the lease, yet the leader must not carry on as if nothing happened (client-go's rule): it stops,
    and once restarted everything changed meanwhile converges."""
    operator_process.stop()
    op = OperatorProcess(kubeconfig, tmp_path)  # the admin: leader election in the test's namespace
    op.start(env={"POD_NAME": "solo"}, extra_args=leader_args(namespace))
    try:
        models = {"m1": dict(LOCAL)}
        k.apply(model_manifest("m1", models["m1"]))
        wait_for("the lease held", lambda: holder(k) == "solo")
        assert_converged(k, models)
        os.kill(op.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        models["m1"] = dict(LOCAL, image="user/image:v2")
        k.apply(model_manifest("m1", models["m1"]))
        models["m2"] = dict(LOCAL)
        k.apply(model_manifest("m2", models["m2"]))
        wait_for("past the renew deadline", lambda: time.monotonic() - stopped > 12.5, timeout=20, interval=0.5)
        os.kill(op.proc.pid, signal.SIGCONT)
        code = wait_for("the stalled leader to step down", lambda: op.proc.poll() is not None and [op.proc.returncode])
        assert code == [1], op.log_tail()
        assert "lost lease" in op.log_tail(200)
        op.proc = None
        op.start(env={"POD_NAME": "solo"}, extra_args=leader_args(namespace))
        assert_converged(k, models, timeout=60)
    finally:
        if op.proc is not None and op.proc.poll() is None:
            os.kill(op.proc.pid, signal.SIGCONT)
        op.stop()
