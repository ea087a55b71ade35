"""Pure decisions of the reconcile: conditions, announcements, ownership, the leader's write window."""

from __future__ import annotations

import asyncio

import pytest

from aimodel_operator import conditions
from aimodel_operator.caches import keep_secret as _keep_secret
from aimodel_operator.children import DEPENDS_ON, ChildConflict, ChildPending, judge
from aimodel_operator.leader import LeaderElector

UID = "0f6c3a8e-1111-2222-3333-444455556666"


def model(spec=None):
    return {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {"name": "m", "namespace": "ns", "uid": UID, "generation": 1},
        "spec": {"type": "remote", "model": "gpt", "image": "i", **(spec or {})},
    }


def child(owner_uid=None, owner_name="m", kind="AIModel"):
    meta = {"name": "m-worker", "namespace": "ns"}
    if owner_uid:
        meta["ownerReferences"] = [{"kind": kind, "name": owner_name, "uid": owner_uid, "controller": True}]
    return {"kind": "ServiceAccount", "metadata": meta}


# -- ownership -------------------------------------------------------------------


def test_a_child_is_ours_only_by_its_controller_uid():
    judge(model(), child(UID))
    with pytest.raises(ChildConflict, match="ServiceAccount m-worker already exists"):
        judge(model(), child())
    with pytest.raises(ChildConflict):
        judge(model(), child("another-uid", owner_name="other"))
    # A non-controller reference to us does not make it ours.
    shared = child()
    shared["metadata"]["ownerReferences"] = [{"kind": "AIModel", "name": "m", "uid": UID, "controller": False}]
    with pytest.raises(ChildConflict):
        judge(model(), shared)


def test_a_child_of_a_deleted_namesake_waits_for_garbage_collection():
    with pytest.raises(ChildPending):
        judge(model(), child("uid-of-the-deleted-one"))


def test_dependents_wait_for_what_they_run_as_or_bind():
    assert set(DEPENDS_ON["Deployment"]) == {"ServiceAccount", "Secret"}
    assert set(DEPENDS_ON["RoleBinding"]) == {"Role", "ServiceAccount"}
    assert "Deployment" in DEPENDS_ON["ScaledObject"]


# -- conditions ------------------------------------------------------------------


def test_api_key_secret_problems_name_the_field():
    ref = model({"apiKeySecretRef": {"name": "s", "key": "token"}})
    assert conditions.api_key_secret(model(), None) is None
    missing = conditions.api_key_secret(ref, None)
    assert missing.reason == "APIKeySecretNotFound"
    assert missing.message == 'spec.apiKeySecretRef: Secret "s" does not exist in namespace ns'
    assert conditions.api_key_secret(ref, frozenset({"other"})).message == (
        'spec.apiKeySecretRef: Secret "s" has no key "token"'
    )
    assert conditions.api_key_secret(ref, frozenset({"token"})) is None


def test_refused_children_and_conflicts():
    assert conditions.apply_failed([]) is None
    cond = conditions.apply_failed(["Deployment m-deployment: images from forbidden/ are not allowed"])
    assert (cond.type, cond.status, cond.reason) == ("Ready", False, "ApplyFailed")
    assert "forbidden/" in cond.message
    assert conditions.child_conflicts(["a", "b"]).message == "a; b"


def test_autoscaling_condition():
    keda = model({"msgBacklogThreshold": 2})
    assert conditions.autoscaling(model(), True, "http://admin", None) is None
    assert conditions.autoscaling(keda, False, "http://admin", None).reason == "KEDANotInstalled"
    assert conditions.autoscaling(keda, True, "", None).reason == "PulsarAdminURLNotSet"
    assert conditions.autoscaling(keda, True, "http://admin", None).status is None
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Active", "status": "False"}]}}
    cond = conditions.autoscaling(keda, True, "http://admin", ready)
    assert (cond.status, cond.reason, cond.message) == (
        True,
        "ScaledObjectReady",
        "KEDA ScaledObject ready; active=False",
    )
    failing = {
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "TriggerError", "message": "x"}]}
    }
    assert conditions.autoscaling(keda, True, "http://admin", failing).reason == "TriggerError"


def _status(state, message, *conds):
    return {
        "state": state,
        "message": message,
        "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conds],
    }


def test_announcements():
    first = _status("Running", "ok", ("Ready", "True", "WorkersReady", "1/1"))
    assert conditions.announcements({}, first) == []
    failed = _status("Failed", "GeneralError: x", ("Ready", "False", "WorkerReportedError", "GeneralError: x"))
    [note] = conditions.announcements(first, failed)
    assert (note.type, note.reason, note.message) == ("Warning", "StateFailed", "GeneralError: x")
    refused = _status("Running", "m", ("Ready", "False", "ApplyFailed", "Deployment m-deployment: denied"))
    [note] = conditions.announcements(first, refused)
    assert (note.type, note.reason) == ("Warning", "ApplyFailed")
    # The same problem again is no news.
    assert conditions.announcements(refused, refused) == []


def test_workers_problems_are_announced_when_they_appear_and_when_they_clear():
    ready = ("Ready", "True", "WorkersReady", "3/3")

    def st(status, reason, message):
        return _status("Running", "ok", ready, ("WorkersAvailable", status, reason, message))

    starting = st("False", "WorkersStarting", "0/3 workers ready")
    available = st("True", "WorkersAvailable", "3/3 workers available")
    crashing = st("False", "CrashLoopBackOff", "3/3 workers in CrashLoopBackOff (exit 1)")
    # A new model's workers starting, then all available: no news.
    assert conditions.announcements({}, starting) == []
    assert conditions.announcements(starting, available) == []
    [note] = conditions.announcements(available, crashing)
    assert (note.type, note.reason, note.message) == (
        "Warning",
        "WorkersCrashLoopBackOff",
        "3/3 workers in CrashLoopBackOff (exit 1)",
    )
    # The same problem with other counts is not news again.
    assert conditions.announcements(crashing, st("False", "CrashLoopBackOff", "2/3 workers in CrashLoopBackOff")) == []
    [note] = conditions.announcements(crashing, available)
    assert (note.type, note.reason) == ("Normal", "WorkersRecovered")
    # A fixed image rolls out: the problem gives way to new workers starting, then available.
    troubled = conditions.troubles(crashing, frozenset())
    assert troubled == {"WorkersAvailable"}
    assert conditions.announcements(crashing, starting, troubled) == []
    troubled = conditions.troubles(starting, troubled)
    [note] = conditions.announcements(starting, available, troubled)
    assert (note.type, note.reason) == ("Normal", "WorkersRecovered")
    assert conditions.troubles(available, troubled) == frozenset()


def test_the_end_of_a_problem_the_operator_found_is_announced_after_the_rollout_that_fixes_it():
    missing = _status("Running", "m", ("Ready", "False", "APIKeySecretNotFound", 'Secret "s" does not exist'))
    rolling = _status("Running", "m", ("Ready", "False", "RollingOut", "0/1 workers ready; rolling out"))
    ready = _status("Running", "m", ("Ready", "True", "WorkersReady", "1/1 workers ready"))
    troubled = conditions.troubles(missing, frozenset())
    assert conditions.announcements(missing, rolling, troubled) == []
    troubled = conditions.troubles(rolling, troubled)
    [note] = conditions.announcements(rolling, ready, troubled)
    assert (note.type, note.reason, note.message) == ("Normal", "ProblemResolved", "resolved: 1/1 workers ready")
    # A model that was never in trouble: Ready turning True is no news.
    assert conditions.announcements(rolling, ready, frozenset()) == []


# -- what the caches keep --------------------------------------------------------


def test_a_labelled_secret_is_kept_whole_only_when_an_aimodel_controls_it():
    label = {"app.kubernetes.io/managed-by": "aimodel-operator"}
    theirs = {
        "metadata": {"name": "s", "namespace": "ns", "uid": "u", "resourceVersion": "5", "labels": label},
        "data": {"token": "c2VjcmV0"},
    }
    kept = _keep_secret(theirs)
    assert set(kept) == {"metadata"} and "c2VjcmV0" not in str(kept)
    owner = {"apiVersion": "model.youxam.com/v1alpha1", "kind": "AIModel", "name": "m", "uid": "1", "controller": True}
    ours = {"metadata": {"name": "m-worker-secrets", "namespace": "ns", "labels": label, "ownerReferences": [owner]}}
    assert _keep_secret({**ours, "data": {"API_KEY": "eA=="}})["data"] == {"API_KEY": "eA=="}
    not_controlling = {**owner, "controller": False}
    assert "data" not in _keep_secret({**ours, "metadata": {**ours["metadata"], "ownerReferences": [not_controlling]}})


# -- leader election --------------------------------------------------------------


async def test_the_leader_writes_only_within_its_renew_deadline():
    now = [100.0]
    elector = LeaderElector("ns", "lease", "me", lambda: None, clock=lambda: now[0])
    assert elector.write_window() == 0
    elector._renewed_at = 100.0
    elector.leading.set()
    assert elector.write_window() == pytest.approx(10)
    now[0] = 109.5
    assert elector.write_window() == pytest.approx(0.5)
    now[0] = 110.1
    assert elector.write_window() < 0
    await asyncio.sleep(0)


def test_a_lease_expires_by_our_clock_from_when_it_last_changed():
    now = [0.0]
    elector = LeaderElector("ns", "lease", "me", lambda: None, clock=lambda: now[0])
    # The holder's renewTime is an hour old by our wall clock (its clock is skewed): irrelevant.
    spec = {"holderIdentity": "other", "renewTime": "2020-01-01T00:00:00.000000Z", "leaseDurationSeconds": 15}
    elector._observe(spec)
    now[0] = 14.0
    elector._observe(spec)
    assert now[0] < elector._observed_at + 15  # still live
    now[0] = 20.0
    elector._observe({**spec, "renewTime": "2020-01-01T00:00:05.000000Z"})  # it renewed: live again
    assert elector._observed_at == 20.0
    now[0] = 36.0
    elector._observe({**spec, "renewTime": "2020-01-01T00:00:05.000000Z"})
    assert now[0] >= elector._observed_at + 15  # unchanged for a whole duration: expired


def test_a_new_message_of_the_same_error_is_not_announced_again():
    failed = _status("Failed", "GeneralError: request 1 failed", ("Ready", "False", "WorkerReportedError", "x"))
    again = _status("Failed", "GeneralError: request 2 failed", ("Ready", "False", "WorkerReportedError", "x"))
    other = _status("Failed", "AuthenticationError: bad key", ("Ready", "False", "WorkerReportedError", "x"))
    assert conditions.announcements(failed, again) == []
    [note] = conditions.announcements(again, other)
    assert note.reason == "StateFailed" and note.message == "AuthenticationError: bad key"
