"""The WorkersAvailable summary: from pods and Deployment conditions to one bounded condition."""

from __future__ import annotations

from aimodel_operator import workers
from aimodel_operator.status import Condition

RS = "m-deployment-abc"


def pod(name="m-1", rs=RS, ready=False, waiting=None, waiting_message="", terminated=None, last=None, **extra):
    container = {"name": "worker", "ready": ready, "restartCount": extra.pop("restarts", 0), "state": {}}
    if waiting:
        container["state"] = {"waiting": {"reason": waiting, "message": waiting_message}}
    elif terminated:
        container["state"] = {"terminated": terminated}
    else:
        container["state"] = {"running": {"startedAt": "2026-11-29T00:00:00Z"}}
    if last:
        container["lastState"] = {"terminated": last}
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if extra.pop("unschedulable", None) is not None:
        conditions = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes are available"}
        ]
        container = None
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": "17",
            "labels": {"model.youxam.com/aimodel": "m", "pod-template-hash": "abc"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": rs, "controller": True}],
            "managedFields": [{"manager": "kubelet"}],
        },
        "spec": {"containers": [{"name": "worker", "image": "x"}]},
        "status": {"conditions": conditions, "containerStatuses": [container] if container else []},
    }


CRASH = {"exitCode": 1, "reason": "Error", "message": 'ConfigurationError: Local model "x" is not supported.\n'}


def kept(*pods):
    return [workers.keep_pod(p) for p in pods]


def test_keep_pod_keeps_only_what_the_summary_needs():
    k = workers.keep_pod(pod(waiting="CrashLoopBackOff", waiting_message="back-off 10s", last=CRASH))
    assert k == {
        "metadata": {"name": "m-1", "namespace": "ns", "labels": {"model.youxam.com/aimodel": "m"}},
        "rs": RS,
        "ready": False,
        "waiting": "CrashLoopBackOff",
        "waitingMessage": "back-off 10s",
        "terminated": {
            "exitCode": 1,
            "reason": "Error",
            "message": 'ConfigurationError: Local model "x" is not supported.',
        },
    }
    # A healthy pod is a few names and a flag; two versions saying the same thing are stored the same.
    assert workers.keep_pod(pod(ready=True)) == {
        "metadata": {"name": "m-1", "namespace": "ns", "labels": {"model.youxam.com/aimodel": "m"}},
        "rs": RS,
        "ready": True,
    }


def test_a_huge_termination_message_is_bounded():
    k = workers.keep_pod(pod(waiting="CrashLoopBackOff", last={"exitCode": 2, "message": "x" * 100_000}))
    assert len(k["terminated"]["message"]) == workers.DETAIL_LIMIT


def test_crash_loop_with_its_termination_message():
    pods = kept(*(pod(f"m-{i}", waiting="CrashLoopBackOff", last=CRASH) for i in range(2)), pod("m-3", ready=True))
    cond = workers.summarize(3, 1, [], pods, RS)
    assert cond == Condition(
        "WorkersAvailable",
        False,
        "CrashLoopBackOff",
        '2/3 workers in CrashLoopBackOff (exit 1: ConfigurationError: Local model "x" is not supported.)',
    )


def test_oom_killed_says_so():
    pods = kept(pod(waiting="CrashLoopBackOff", last={"exitCode": 137, "reason": "OOMKilled"}))
    assert workers.summarize(1, 0, [], pods, RS).message == "1/1 workers in CrashLoopBackOff (OOMKilled, exit 137)"


def test_a_crash_looping_container_running_for_a_moment_is_still_crash_looping():
    k = workers.keep_pod(pod(last=CRASH, restarts=3))
    assert k["waiting"] == "CrashLoopBackOff"
    # A container that restarted once and now serves is fine.
    assert "waiting" not in workers.keep_pod(pod(ready=True, last=CRASH, restarts=1))


def test_image_pull_phases_are_one_problem():
    pods = kept(
        pod("a", waiting="ErrImagePull", waiting_message='pull access denied for "nope"'),
        pod("b", waiting="ImagePullBackOff", waiting_message='Back-off pulling image "nope"'),
    )
    cond = workers.summarize(2, 0, [], pods, RS)
    assert cond.reason == "ImagePullBackOff"
    assert cond.message == '2/2 workers in ImagePullBackOff (pull access denied for "nope")'


def test_unschedulable_with_the_schedulers_message():
    cond = workers.summarize(3, 0, [], kept(pod(unschedulable=True)), RS)
    assert (cond.status, cond.reason) == (False, "Unschedulable")
    assert cond.message == "1/3 workers Unschedulable (0/2 nodes are available)"


def test_refused_creation_comes_first_and_problems_are_joined():
    dep = {
        "status": {
            "conditions": [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "-"},
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": 'pods "m-1" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, '
                    "limited: pods=1",
                },
            ]
        }
    }
    problems = workers.deployment_problems(dep)
    cond = workers.summarize(2, 0, problems, kept(pod(waiting="CrashLoopBackOff", last=CRASH)), RS)
    assert cond.reason == "FailedCreate"
    assert cond.message.startswith('workers cannot be created: pods "m-1" is forbidden: exceeded quota: q')
    assert "; 1/2 workers in CrashLoopBackOff (exit 1: " in cond.message


def test_a_stalled_rollout():
    dep = {
        "status": {
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": 'ReplicaSet "m-deployment-abc" has timed out progressing.',
                }
            ]
        }
    }
    cond = workers.summarize(1, 0, workers.deployment_problems(dep), [], RS)
    assert cond.reason == "ProgressDeadlineExceeded"
    assert cond.message == 'rollout stalled: ReplicaSet "m-deployment-abc" has timed out progressing.'


def test_only_the_current_replica_sets_pods_count():
    old = pod("old", rs="m-deployment-old", waiting="CrashLoopBackOff", last=CRASH)
    cond = workers.summarize(1, 0, [], kept(old, pod("new", rs=RS)), RS)
    assert (cond.status, cond.reason, cond.message) == (False, "WorkersStarting", "0/1 workers ready")


def test_healthy_starting_and_zero():
    assert workers.summarize(3, 3, [], kept(pod(ready=True)), RS) == Condition(
        "WorkersAvailable", True, "WorkersAvailable", "3/3 workers available"
    )
    assert workers.summarize(0, 0, [], [], RS).reason == "ScaledToZero"
    assert workers.summarize(3, 1, [], [], None).reason == "WorkersStarting"


def test_the_message_is_bounded_whatever_the_pods_say():
    many = [
        pod(f"p{i}", waiting=reason, waiting_message="m" * 1000, last={"exitCode": 1, "message": "z" * 1000})
        for i, reason in enumerate(workers.WAITING_REASONS)
    ]
    cond = workers.summarize(8, 0, [], kept(*many, pod("u", unschedulable=True)), RS)
    assert len(cond.message) <= workers.MESSAGE_LIMIT
    assert cond.reason == "CrashLoopBackOff"


def test_a_real_kubelets_crash_loop_does_not_flap_between_back_offs():
    """Without a readiness probe a crashed container that runs again is Ready for the moment it lives."""
    again = pod(ready=True, last=CRASH, restarts=3)  # running since 2026-11-29T00:00:00Z
    started = 1_795_910_400.0  # that instant, in epoch seconds
    kept_pod = workers.keep_pod(again)
    assert "waiting" not in kept_pod and kept_pod["restartedAt"] == "2026-11-29T00:00:00Z"
    shortly = workers.summarize(1, 1, [], [kept_pod], RS, now=started + 30)
    assert (shortly.status, shortly.reason) == (False, "CrashLoopBackOff")
    assert (
        shortly.message
        == '1/1 workers in CrashLoopBackOff (exit 1: ConfigurationError: Local model "x" is not supported.)'
    )
    assert workers.grace_left([kept_pod], started + 30) == workers.CRASH_GRACE_SECONDS - 30
    # Running well past the grace period: it recovered.
    later = workers.summarize(1, 1, [], [kept_pod], RS, now=started + workers.CRASH_GRACE_SECONDS + 1)
    assert (later.status, later.reason) == (True, "WorkersAvailable")
    assert workers.grace_left([kept_pod], started + workers.CRASH_GRACE_SECONDS + 1) is None
