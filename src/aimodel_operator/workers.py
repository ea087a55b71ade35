"""Pure: what is wrong with a model's workers, read from its pods and its Deployment.

The operator keeps a tiny form of each worker pod (``keep_pod``) and of each
Deployment's problem conditions (``deployment_problems``); ``summarize``
turns them into the ``WorkersAvailable`` condition: crash loops with the last
termination, image pulls, unschedulable pods, refused creations and stalled
rollouts, counted over the pods of the current ReplicaSet.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .builders import LABEL_MODEL, WORKER_CONTAINER
from .objects import Manifest, controller_of
from .status import WORKERS, WORKERS_STARTING, Condition, bound

STARTING = WORKERS_STARTING
AVAILABLE = "WorkersAvailable"
SCALED_TO_ZERO = "ScaledToZero"

# What a kept pod says at most about one thing (a waiting or termination message).
DETAIL_LIMIT = 300
# A container that crashed and runs again counts as crash-looping for this long: a real kubelet
# shows it Running (and, without a readiness probe, Ready) for the moment it lives between two
# back-offs, and the condition must not flap (nor announce a recovery) at every restart.
CRASH_GRACE_SECONDS = 120.0
# The condition's message: short enough for `kubectl get -o wide`, bounded whatever the pods say.
MESSAGE_LIMIT = 512

# Container waiting reasons that mean the worker cannot run, most important first.
WAITING_REASONS = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)
# Pull failures are one problem to a user, whichever phase of the back-off the pods are in.
_SAME_AS = {"ErrImagePull": "ImagePullBackOff", "ErrImageNeverPull": "ImagePullBackOff"}
# Problem reasons, most important first: what stops workers from existing, then from running.
PRIORITY = (
    "FailedCreate",
    "ProgressDeadlineExceeded",
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "Unschedulable",
)


def keep_pod(obj: Manifest) -> Manifest:
    """What the operator keeps of a worker pod: its model, its ReplicaSet, readiness and trouble.

    No resourceVersion: two versions of a pod that say the same thing are stored the same, and
    the informer does not wake the model for a change that does not matter to it.
    """
    meta = obj["metadata"]
    owner = (controller_of(obj) or {}).get("name", "")
    status = obj.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    kept: dict[str, Any] = {
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "labels": {LABEL_MODEL: (meta.get("labels") or {}).get(LABEL_MODEL, "")},
        },
        "rs": owner,
        "ready": (conds.get("Ready") or {}).get("status") == "True",
    }
    scheduled = conds.get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        kept["unschedulable"] = bound(scheduled.get("message") or "", DETAIL_LIMIT)
    statuses = status.get("containerStatuses") or []
    container = next((c for c in statuses if c.get("name") == WORKER_CONTAINER), statuses[0] if statuses else None)
    if container:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
        if waiting.get("reason") in WAITING_REASONS:
            kept["waiting"] = waiting["reason"]
            kept["waitingMessage"] = bound(waiting.get("message") or "", DETAIL_LIMIT)
        elif terminated and terminated.get("exitCode") and container.get("restartCount"):
            # Between two back-offs a crash-looping container runs for a moment: still a crash loop
            # while it is not ready, and for CRASH_GRACE_SECONDS after it started again.
            if not container.get("ready"):
                kept["waiting"] = "CrashLoopBackOff"
                kept["waitingMessage"] = ""
            elif (state.get("running") or {}).get("startedAt"):
                kept["restartedAt"] = state["running"]["startedAt"]
        if terminated:
            kept["terminated"] = {
                "exitCode": terminated.get("exitCode"),
                "reason": terminated.get("reason") or "",
                "message": bound((terminated.get("message") or "").strip(), DETAIL_LIMIT),
            }
    return kept


def deployment_problems(deployment: Manifest) -> list[dict[str, str]]:
    """The Deployment's conditions that say workers cannot be had: pods refused, rollout stalled."""
    out = []
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        failed = cond.get("type") == "ReplicaFailure" and cond.get("status") == "True"
        stalled = cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded"
        if failed or stalled:
            reason = "ProgressDeadlineExceeded" if stalled else cond.get("reason") or "FailedCreate"
            out.append({"reason": reason, "message": bound(cond.get("message") or "", DETAIL_LIMIT)})
    return out


@dataclass(frozen=True)
class _Problem:
    reason: str
    text: str


def termination(pods: list[Manifest]) -> str:
    """The last termination worth telling: with its message if any pod has one, e.g.
    ``exit 1: ConfigurationError: ...`` or ``OOMKilled, exit 137``."""
    ended = [p["terminated"] for p in pods if p.get("terminated")]
    if not ended:
        return ""
    last = next((t for t in ended if t.get("message")), ended[0])
    code = last.get("exitCode")
    head = f"exit {code}" if code is not None else "exited"
    if last.get("reason") and last["reason"] not in ("Error", "Completed"):
        head = f"{last['reason']}, {head}"
    return f"{head}: {last['message']}" if last.get("message") else head


def _pod_problems(pods: list[Manifest], desired: int) -> list[_Problem]:
    out = []
    waiting = Counter(_SAME_AS.get(p["waiting"], p["waiting"]) for p in pods if p.get("waiting"))
    for reason, count in waiting.items():
        stuck = [p for p in pods if _SAME_AS.get(p.get("waiting", ""), p.get("waiting")) == reason]
        if reason == "CrashLoopBackOff":
            detail = termination(stuck) or stuck[0].get("waitingMessage", "")
        else:
            detail = next((p["waitingMessage"] for p in stuck if p.get("waitingMessage")), "")
        suffix = f" ({detail})" if detail else ""
        out.append(_Problem(str(reason), f"{count}/{desired} workers in {reason}{suffix}"))
    unschedulable = [p for p in pods if p.get("unschedulable") is not None]
    if unschedulable:
        detail = next((p["unschedulable"] for p in unschedulable if p["unschedulable"]), "")
        suffix = f" ({detail})" if detail else ""
        out.append(_Problem("Unschedulable", f"{len(unschedulable)}/{desired} workers Unschedulable{suffix}"))
    return out


def _timestamp(value: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return None


def _just_restarted(pod: Manifest, now: float) -> bool:
    started = _timestamp(pod.get("restartedAt", ""))
    return started is not None and now - started < CRASH_GRACE_SECONDS


def grace_left(pods: list[Manifest], now: float) -> float | None:
    """Seconds until the last pod that crashed and runs again leaves its grace period (None: none does):
    the model must be looked at again then, when no pod event will come to say it."""
    left = [
        CRASH_GRACE_SECONDS - (now - started)
        for p in pods
        if (started := _timestamp(p.get("restartedAt", ""))) is not None and now - started < CRASH_GRACE_SECONDS
    ]
    return max(left) if left else None


def summarize(
    desired: int,
    ready: int,
    problems: list[dict[str, str]],
    pods: list[Manifest],
    current_rs: str | None,
    now: float | None = None,
) -> Condition:
    """The WorkersAvailable condition of a model whose Deployment wants ``desired`` workers, ``ready``
    of them ready, the Deployment's ``problems`` (deployment_problems), and its kept ``pods``.

    Only the pods of ``current_rs`` (the ReplicaSet of the current template) count, when it is known:
    a rollout's old pods do not speak for the new spec. ``now`` (epoch seconds) tells a container
    that crashed and has run again only a moment from one that recovered.
    """
    if current_rs:
        pods = [p for p in pods if p.get("rs") == current_rs]
    if now is not None:
        pods = [
            {**p, "waiting": "CrashLoopBackOff", "waitingMessage": ""}
            if not p.get("waiting") and _just_restarted(p, now)
            else p
            for p in pods
        ]
    found = [
        _Problem(
            p["reason"],
            f"rollout stalled: {p['message']}"
            if p["reason"] == "ProgressDeadlineExceeded"
            else f"workers cannot be created: {p['message']}",
        )
        for p in problems
    ]
    found += _pod_problems(pods, desired)
    if found:
        found.sort(key=lambda p: PRIORITY.index(p.reason) if p.reason in PRIORITY else len(PRIORITY))
        return Condition(WORKERS, False, found[0].reason, bound("; ".join(p.text for p in found), MESSAGE_LIMIT))
    if desired == 0:
        return Condition(WORKERS, True, SCALED_TO_ZERO, "no workers wanted")
    if ready >= desired:
        return Condition(WORKERS, True, AVAILABLE, f"{ready}/{desired} workers available")
    return Condition(WORKERS, False, STARTING, f"{ready}/{desired} workers ready")
