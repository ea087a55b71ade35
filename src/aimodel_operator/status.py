"""Pure status computation: (AIModel, newest worker report, children as seen) -> status."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from .api import State
from .builders import deployment_name
from .objects import Manifest

MAX_MESSAGE = 1024

# Condition types.
READY = "Ready"
AUTOSCALING = "Autoscaling"
WORKERS = "WorkersAvailable"
# The WorkersAvailable reason of workers on their way with nothing known to be wrong.
WORKERS_STARTING = "WorkersStarting"

# Fields whose change is urgent to publish. Replica counts, and a newer report
# on a model that is already Failed, may be batched: a flood of reports for
# one model must not become a flood of status writes.
URGENT_FIELDS = ("state", "observedGeneration", "specResourceVersion")


@dataclass(frozen=True)
class Report:
    """A worker's error report: the newest Warning event seen for one AIModel."""

    resource_version: int
    reason: str
    message: str
    # The reporting pod, when the event names it (``related``).
    pod: str = ""

    @property
    def text(self) -> str:
        return bound(f"{self.reason}: {self.message}")


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None
    reason: str
    message: str


# Control characters (but tab and newline) and lone surrogates: they garble terminals
# and can make a status write invalid.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def bound(text: str, limit: int = MAX_MESSAGE) -> str:
    """Keep status messages printable and small enough never to break a status write."""
    text = _UNPRINTABLE.sub("\ufffd", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def running_message(model: Manifest) -> str:
    return f"Deployment {deployment_name(model['metadata']['name'])} is up to date"


def ready_condition(
    state: str,
    message: str,
    replicas: int,
    ready: int,
    deployment: Manifest | None,
    autoscaled: bool = False,
    workers: Condition | None = None,
) -> Condition:
    if state == State.FAILED:
        return Condition(READY, False, "WorkerReportedError", message)
    if deployment is None:
        return Condition(READY, False, "DeploymentMissing", "the worker Deployment does not exist yet")
    if workers is not None and workers.status is False and workers.reason != WORKERS_STARTING:
        # What is wrong with the workers (a crash loop, an image that cannot be pulled) says more than a count.
        return Condition(READY, False, workers.reason, workers.message)
    dep_status = deployment.get("status") or {}
    rolled_out = _int(dep_status.get("observedGeneration")) >= _int(deployment["metadata"].get("generation", 1))
    if not rolled_out or _int(dep_status.get("updatedReplicas")) < replicas:
        return Condition(READY, False, "RollingOut", f"{ready}/{replicas} workers ready; rolling out the new spec")
    if replicas == 0:
        # Nothing is wrong with a model nobody needs right now.
        why = "KEDA starts a worker when a request is queued" if autoscaled else "spec.replicas is 0"
        return Condition(READY, True, "ScaledToZero", f"scaled to zero: no workers run; {why}")
    if ready >= replicas:
        return Condition(READY, True, "WorkersReady", f"{ready}/{replicas} workers ready")
    return Condition(READY, False, "WorkersNotReady", f"{ready}/{replicas} workers ready")


def _condition_dict(cond: Condition, previous: dict[str, Any] | None, generation: int, stamp: str) -> dict[str, Any]:
    status = "Unknown" if cond.status is None else str(cond.status)
    kept = previous.get("lastTransitionTime") if previous is not None and previous.get("status") == status else None
    return {
        "type": cond.type,
        "status": status,
        "reason": cond.reason,
        "message": bound(cond.message),
        "observedGeneration": generation,
        "lastTransitionTime": kept or stamp,
    }


def compute(
    model: Manifest,
    report: Report | None,
    deployment: Manifest | None,
    extra_conditions: tuple[Condition, ...] = (),
    stamp: str | None = None,
    problem: Condition | None = None,
    autoscaled: bool = False,
    workers: Condition | None = None,
) -> dict[str, Any]:
    """The status the AIModel should show.

    A spec change (new generation) resets the state to Running and records the
    model's resourceVersion at that moment: only reports newer than it (by
    resourceVersion, which orders every write in the cluster) may fail the
    new spec. This survives restarts, when old events are listed again.

    ``problem`` is what the operator found wrong with a Running model (a
    referenced Secret missing, a child's name taken): it makes Ready False
    and is the message. ``autoscaled``: KEDA sets the replica count. ``workers`` is the
    WorkersAvailable condition (workers.summarize): shown, and Ready names its problem.
    """
    meta = model["metadata"]
    current = model.get("status") or {}
    generation = _int(meta.get("generation", 1))
    failure = None
    if current.get("observedGeneration") != generation or not current.get("specResourceVersion"):
        spec_rv = str(meta.get("resourceVersion", "0"))
    else:
        spec_rv = current["specResourceVersion"]
        if current.get("state") == State.FAILED:
            failure = current.get("message") or ""
    if report is not None and report.resource_version > _int(spec_rv):
        failure = report.text
    if failure is not None:
        state, message = State.FAILED.value, failure
    else:
        state, message = State.RUNNING.value, problem.message if problem else running_message(model)

    dep_status = (deployment or {}).get("status") or {}
    replicas = _int(dep_status.get("replicas"))
    ready = _int(dep_status.get("readyReplicas"))
    desired = _int(((deployment or {}).get("spec") or {}).get("replicas", replicas))

    stamp = stamp or now()
    previous = {c.get("type"): c for c in current.get("conditions") or []}
    if problem is not None and state == State.RUNNING:
        ready_cond = problem
    else:
        ready_cond = ready_condition(state, message, desired, ready, deployment, autoscaled, workers)
    conditions = [ready_cond, *([workers] if workers is not None else []), *extra_conditions]
    return {
        "state": state,
        "message": bound(message),
        "observedGeneration": generation,
        "specResourceVersion": spec_rv,
        "replicas": replicas,
        "readyReplicas": ready,
        "conditions": [_condition_dict(c, previous.get(c.type), generation, stamp) for c in conditions],
    }


def differs(current: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    return (current or {}) != new


def urgent(current: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """A change users wait for (state, new generation, a condition flipping), not counters or messages moving.

    The first status of a new model waits for its batch too, unless it is
    Failed: by then the Deployment has usually been seen, and one write says
    what two would have.
    """
    current = current or {}
    if not current:
        return bool(new["state"] == State.FAILED)
    if any(current.get(f) != new.get(f) for f in URGENT_FIELDS):
        return True
    # A condition changing status (e.g. Ready turning True) is what `kubectl wait` waits for.
    before = {c.get("type"): c.get("status") for c in current.get("conditions") or []}
    after = {c["type"]: c["status"] for c in new["conditions"]}
    return before != after
