"""Two operator replicas with --leader-elect: only the leader acts; the other takes over when it stops."""

from __future__ import annotations

from kube_helpers import OperatorProcess, wait_for


def sample(name: str) -> dict:
    return {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {"name": name},
        "spec": {"type": "local", "model": "TinyLlama-1.1B", "replicas": 1, "image": "user/image:tag"},
    }


def reconciled(proc: OperatorProcess) -> float:
    return proc.metrics().get('aimodel_operator_reconciles_total{result="ok"}', 0)


def test_only_the_leader_acts_and_the_other_takes_over(operator_process, kubeconfig, k, namespace, tmp_path):
    operator_process.stop()
    replicas = {}
    try:
        for name in ("replica-a", "replica-b"):
            proc = OperatorProcess(kubeconfig, tmp_path / name)
            (tmp_path / name).mkdir()
            proc.start({"POD_NAME": name}, extra_args=("--leader-elect", f"--leader-election-namespace={namespace}"))
            replicas[name] = proc
        holder = wait_for(
            "a leader",
            lambda: ((k.get("lease", "aimodel-operator-leader") or {}).get("spec") or {}).get("holderIdentity"),
        )
        leader, follower = replicas[holder], replicas[next(n for n in replicas if n != holder)]

        k.apply(sample("first"))
        wait_for("the leader's Deployment", lambda: k.get("deployment", "first-deployment"))
        wait_for("the leader's status write", lambda: (k.get("aimodel", "first").get("status") or {}).get("state"))
        assert reconciled(leader) >= 1
        assert reconciled(follower) == 0 and follower.api_writes() == 0

        # A leader that stops hands its lease back; the follower, with warm caches, takes over.
        assert leader.stop() == 0
        new_holder = wait_for(
            "the follower to take the lease",
            lambda: (h := k.get("lease", "aimodel-operator-leader")["spec"].get("holderIdentity")) != holder and h,
            timeout=30,
        )
        assert replicas[new_holder] is follower
        k.apply(sample("second"))
        wait_for("the new leader's Deployment", lambda: k.get("deployment", "second-deployment"), timeout=30)
        assert reconciled(follower) >= 1
    finally:
        for proc in replicas.values():
            proc.stop()
