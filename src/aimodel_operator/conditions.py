"""Pure condition logic: what the operator found, and what is worth an Event. No API calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import api, builders
from .claims import MODEL_NAME_IN_USE
from .objects import Manifest
from .status import AUTOSCALING, READY, WORKERS, WORKERS_STARTING, Condition

# Ready reasons that mean the operator found something wrong with the AIModel or its children.
PROBLEM_REASONS = frozenset({"ChildConflict", "APIKeySecretNotFound", "ApplyFailed", MODEL_NAME_IN_USE})
# A passing failure (the API server unavailable, a namesake being collected): said in status, no Event.
NOT_APPLIED = "ChildrenNotApplied"


@dataclass(frozen=True)
class Announcement:
    """An Event to post on the AIModel."""

    type: str
    reason: str
    message: str


def autoscaling(
    model: Manifest, keda: bool, pulsar_admin_url: str, scaled_object: Manifest | None, held_elsewhere: bool = False
) -> Condition | None:
    """The Autoscaling condition: what KEDA does for a model that asks for it (None when it does not).
    ``held_elsewhere``: another namespace holds the model name (claims.py)."""
    if not builders.wants_autoscaling(model):
        return None
    if held_elsewhere:
        return Condition(
            AUTOSCALING, False, MODEL_NAME_IN_USE, "no ScaledObject while another namespace holds the model name"
        )
    if not keda:
        return Condition(
            AUTOSCALING,
            False,
            "KEDANotInstalled",
            "KEDA is not installed (the keda.sh/v1alpha1 ScaledObject API is missing); "
            "workers run at spec.replicas until KEDA is installed",
        )
    if not pulsar_admin_url:
        return Condition(
            AUTOSCALING,
            False,
            "PulsarAdminURLNotSet",
            "set PULSAR_ADMIN_URL in the operator's environment to the Pulsar admin API "
            "so KEDA can read the backlog; workers run at spec.replicas meanwhile",
        )
    status = (scaled_object or {}).get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conds.get("Ready")
    if not ready or ready.get("status") == "Unknown":
        return Condition(AUTOSCALING, None, "WaitingForKEDA", "KEDA has not reported on the ScaledObject yet")
    active = (conds.get("Active") or {}).get("status", "Unknown")
    if ready.get("status") == "True":
        return Condition(AUTOSCALING, True, "ScaledObjectReady", f"KEDA ScaledObject ready; active={active}")
    return Condition(
        AUTOSCALING, False, ready.get("reason") or "ScaledObjectNotReady", ready.get("message") or "not ready"
    )


def api_key_secret(model: Manifest, secret_keys: frozenset[str] | None) -> Condition | None:
    """A problem with the Secret ``spec.apiKeySecretRef`` names, given its keys (None: it does not exist)."""
    ref = builders.spec_of(model).get("apiKeySecretRef")
    if not ref:
        return None
    ns = model["metadata"]["namespace"]
    key = ref.get("key", api.DEFAULT_API_KEY_SECRET_KEY)
    if secret_keys is None:
        message = f'spec.apiKeySecretRef: Secret "{ref["name"]}" does not exist in namespace {ns}'
    elif key not in secret_keys:
        message = f'spec.apiKeySecretRef: Secret "{ref["name"]}" has no key "{key}"'
    else:
        return None
    return Condition(READY, False, "APIKeySecretNotFound", message)


def child_conflicts(messages: list[str]) -> Condition | None:
    if not messages:
        return None
    return Condition(READY, False, "ChildConflict", "; ".join(messages))


def apply_failed(messages: list[str]) -> Condition | None:
    """The API server refused a child (quota, admission, a webhook): the spec is not in effect."""
    if not messages:
        return None
    return Condition(READY, False, "ApplyFailed", "; ".join(messages))


def not_applied(missing: list[str], errors: list[Exception]) -> Condition | None:
    """Children not (yet) applied for a passing reason: the new spec is not in effect, Ready is False."""
    if not missing:
        return None
    why = f": {errors[0]}" if errors else ""
    return Condition(READY, False, NOT_APPLIED, f"not applied yet: {', '.join(missing)}{why}")


def _reason(message: str | None) -> str:
    return (message or "").split(":", 1)[0]


def troubles(after: dict[str, Any], troubled: frozenset[str]) -> frozenset[str]:
    """The condition types that have shown a problem since they were last good, after status ``after``.

    Kept by the controller between writes: the fix of a problem usually passes through a rollout
    (Ready RollingOut, WorkersAvailable WorkersStarting) before all is well, and the recovery is
    announced all the same.
    """
    out = set(troubled)
    for cond in after["conditions"]:
        if cond["type"] == WORKERS:
            problem = cond["status"] == "False" and cond["reason"] != WORKERS_STARTING
        elif cond["type"] == READY:
            problem = cond["reason"] in PROBLEM_REASONS
        else:
            continue
        if cond["status"] == "True":
            out.discard(cond["type"])
        elif problem:
            out.add(cond["type"])
    return frozenset(out)


def _workers_news(before: dict[str, Any] | None, after: dict[str, Any], troubled: bool) -> Announcement | None:
    """A problem with the workers appearing (or turning into another), and its end; not a model's
    workers simply starting. ``troubled``: a problem was shown since they were last available
    (the fix of a bad image passes through a rollout's WorkersStarting before they are)."""
    if after["status"] == "False" and after["reason"] != WORKERS_STARTING:
        return Announcement("Warning", f"Workers{after['reason']}", after["message"])
    was_problem = before is not None and before.get("status") == "False" and before.get("reason") != WORKERS_STARTING
    if after["status"] == "True" and (was_problem or troubled):
        return Announcement("Normal", "WorkersRecovered", after["message"])
    return None


def announcements(
    before: dict[str, Any], after: dict[str, Any], troubled: frozenset[str] = frozenset()
) -> list[Announcement]:
    """Events worth posting for a status change.

    The first status of a new model is no news; a change of state, a new
    error, a change of KEDA's view, a new problem found by the operator, and
    the end of a problem (``troubled``: see ``troubles``) are.
    """
    out = []
    new_state = before.get("state") not in (None, after["state"])
    # A new kind of error is news; the same error with a new message (a worker reporting each
    # failed request) is not: status shows the newest, Events do not repeat it.
    new_error = after["state"] == api.State.FAILED and _reason(before.get("message")) != _reason(after["message"])
    if new_state or new_error:
        kind = "Warning" if after["state"] == api.State.FAILED else "Normal"
        out.append(Announcement(kind, f"State{after['state']}", after["message"]))
    old = {c.get("type"): c for c in before.get("conditions") or []}
    for cond in after["conditions"]:
        if (old.get(cond["type"]) or {}).get("reason") == cond["reason"]:
            continue
        if cond["type"] == AUTOSCALING:
            kind = "Normal" if cond["status"] == "True" else "Warning"
            out.append(Announcement(kind, f"Autoscaling{cond['reason']}", cond["message"]))
        elif cond["type"] == WORKERS:
            note = _workers_news(old.get(WORKERS), cond, WORKERS in troubled)
            if note is not None:
                out.append(note)
        elif cond["reason"] in PROBLEM_REASONS:
            # What the operator refuses to do, or cannot, is said where users look.
            out.append(Announcement("Warning", cond["reason"], cond["message"]))
        elif cond["type"] == READY and cond["status"] == "True":
            was = (old.get(READY) or {}).get("reason")
            if was in PROBLEM_REASONS or READY in troubled:
                out.append(Announcement("Normal", "ProblemResolved", f"resolved: {cond['message']}"))
    return out
