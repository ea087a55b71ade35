"""Status computation: state, message, spec resourceVersion, conditions and when a write is needed."""

import copy

import pytest

from aimodel_operator.status import (
    MAX_MESSAGE,
    Condition,
    Report,
    bound,
    compute,
    differs,
    urgent,
)

T1 = "2024-07-10T17:28:45Z"
T2 = "2024-07-10T18:00:00Z"
RUNNING_MESSAGE = "Deployment ai-model-sample-deployment is up to date"
CONFIG_ERROR = Report(101, "ConfigurationError", 'Local model "not-found-model" is not supported.')


def model(generation: int = 1, rv: str = "100", status: dict | None = None) -> dict:
    m = {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {
            "name": "ai-model-sample",
            "namespace": "default",
            "uid": "u1",
            "generation": generation,
            "resourceVersion": rv,
        },
        "spec": {"type": "local", "model": "TinyLlama-1.1B", "replicas": 3, "image": "user/image:tag"},
    }
    if status is not None:
        m["status"] = status
    return m


def deployment(replicas: int = 3, ready: int = 3, status_replicas: int | None = None) -> dict:
    # A Deployment whose rollout is complete: observed and updated.
    status: dict = {
        "replicas": replicas if status_replicas is None else status_replicas,
        "observedGeneration": 1,
        "updatedReplicas": replicas,
    }
    if ready:
        status["readyReplicas"] = ready
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "ai-model-sample-deployment", "namespace": "default", "generation": 1},
        "spec": {"replicas": replicas},
        "status": status,
    }


def ready_of(status: dict) -> dict:
    (cond,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    return cond


def test_new_model_is_running():
    s = compute(model(), None, deployment(), stamp=T1)
    assert s == {
        "state": "Running",
        "message": RUNNING_MESSAGE,
        "observedGeneration": 1,
        "specResourceVersion": "100",
        "replicas": 3,
        "readyReplicas": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "WorkersReady",
                "message": "3/3 workers ready",
                "observedGeneration": 1,
                "lastTransitionTime": T1,
            }
        ],
    }


def test_new_model_without_generation_or_deployment():
    m = model()
    del m["metadata"]["generation"]
    s = compute(m, None, None, stamp=T1)
    assert s["state"] == "Running"
    assert s["observedGeneration"] == 1
    assert (s["replicas"], s["readyReplicas"]) == (0, 0)
    assert ready_of(s)["status"] == "False"
    assert ready_of(s)["reason"] == "DeploymentMissing"


def test_newer_report_fails():
    s = compute(model(), CONFIG_ERROR, deployment(), stamp=T1)
    assert s["state"] == "Failed"
    assert s["message"] == 'ConfigurationError: Local model "not-found-model" is not supported.'
    assert s["specResourceVersion"] == "100"
    cond = ready_of(s)
    assert (cond["status"], cond["reason"]) == ("False", "WorkerReportedError")
    assert cond["message"] == s["message"]


@pytest.mark.parametrize("rv", [1, 99, 100])
def test_report_not_newer_than_spec_does_not_fail(rv):
    s = compute(model(), Report(rv, "GeneralError", "old"), deployment(), stamp=T1)
    assert s["state"] == "Running"
    assert s["message"] == RUNNING_MESSAGE


def test_failed_stays_failed_without_report_at_same_generation():
    failed = compute(model(), CONFIG_ERROR, deployment(), stamp=T1)
    # E.g. after a restart once the event expired: the status remembers.
    s = compute(model(rv="102", status=failed), None, deployment(), stamp=T2)
    assert s == failed


def test_generation_bump_resets_failed_and_ignores_old_report():
    failed = compute(model(), CONFIG_ERROR, deployment(), stamp=T1)
    assert failed["state"] == "Failed"
    modified = model(generation=2, rv="150", status=failed)
    s = compute(modified, CONFIG_ERROR, deployment(), stamp=T2)
    assert s["state"] == "Running"
    assert s["message"] == RUNNING_MESSAGE
    assert s["observedGeneration"] == 2
    assert s["specResourceVersion"] == "150"
    cond = ready_of(s)
    assert (cond["status"], cond["observedGeneration"], cond["lastTransitionTime"]) == ("True", 2, T2)

    # Across a restart the old event is listed again: still ignored.
    again = compute(model(generation=2, rv="151", status=s), CONFIG_ERROR, deployment(), stamp=T2)
    assert again == s

    # A pod reporting again after the modification fails the model again.
    new_report = Report(152, "AuthenticationError", "bad key")
    refailed = compute(model(generation=2, rv="151", status=s), new_report, deployment(), stamp=T2)
    assert refailed["state"] == "Failed"
    assert refailed["message"] == "AuthenticationError: bad key"
    assert refailed["specResourceVersion"] == "150"


def test_status_without_spec_resource_version_is_reset():
    legacy = {"state": "Failed", "message": "GeneralError: x", "observedGeneration": 1}
    s = compute(model(rv="200", status=legacy), None, deployment(), stamp=T1)
    assert s["state"] == "Running"
    assert s["specResourceVersion"] == "200"


@pytest.mark.parametrize("report", [None, CONFIG_ERROR], ids=["running", "failed"])
def test_unchanged_status_needs_no_write(report):
    first = compute(model(), report, deployment(ready=2), stamp=T1)
    # The status write bumps the model's resourceVersion; nothing else changed.
    second = compute(model(rv="105", status=copy.deepcopy(first)), report, deployment(ready=2), stamp=T2)
    assert differs(first, second) is False
    assert second == first
    assert ready_of(second)["lastTransitionTime"] == T1
    assert urgent(first, second) is False


def test_differs():
    s = compute(model(), None, deployment(), stamp=T1)
    assert differs(None, s) is True
    assert differs({}, s) is True
    assert differs(s, copy.deepcopy(s)) is False
    changed = copy.deepcopy(s)
    changed["readyReplicas"] = 2
    assert differs(s, changed) is True


def test_long_messages_are_bounded():
    long_report = Report(101, "GeneralError", "x" * 5000)
    s = compute(model(), long_report, deployment(), stamp=T1)
    assert s["state"] == "Failed"
    assert len(s["message"]) == MAX_MESSAGE == 1024
    assert s["message"].startswith("GeneralError: xxx")
    assert s["message"].endswith("...")
    assert len(ready_of(s)["message"]) <= MAX_MESSAGE

    stored = {"state": "Failed", "message": "y" * 5000, "observedGeneration": 1, "specResourceVersion": "100"}
    s = compute(model(status=stored), None, deployment(), stamp=T1)
    assert len(s["message"]) == MAX_MESSAGE


def test_bound():
    assert bound("short") == "short"
    assert bound("a\x00b") == "a\ufffdb"
    # Escape sequences and other control characters never reach a terminal; tab and newline stay.
    assert bound("red\x1b[31m\x07!\x7f\x85") == "red\ufffd[31m\ufffd!\ufffd\ufffd"
    assert bound("a\tb\nc") == "a\tb\nc"
    # Invalid UTF-8 decoded with surrogateescape yields lone surrogates: replaced, encodable again.
    assert bound(b"ok\xff\xfe".decode("utf-8", "surrogateescape")).encode() == "ok\ufffd\ufffd".encode()
    assert bound("z" * 1024) == "z" * 1024
    assert bound("z" * 1025) == "z" * 1021 + "..."
    assert bound("abcdef", limit=5) == "ab..."


@pytest.mark.parametrize(
    "dep,status,reason,message",
    [
        (deployment(3, 3), "True", "WorkersReady", "3/3 workers ready"),
        (deployment(3, 2), "False", "WorkersNotReady", "2/3 workers ready"),
        (deployment(3, 0), "False", "WorkersNotReady", "0/3 workers ready"),
        (deployment(0, 0), "True", "ScaledToZero", "scaled to zero: no workers run; spec.replicas is 0"),
        (
            deployment(0, 0, status_replicas=2),
            "True",
            "ScaledToZero",
            "scaled to zero: no workers run; spec.replicas is 0",
        ),
        (None, "False", "DeploymentMissing", "the worker Deployment does not exist yet"),
    ],
    ids=["all-ready", "some-ready", "none-ready", "zero-replicas", "scaling-to-zero", "no-deployment"],
)
def test_ready_condition(dep, status, reason, message):
    cond = ready_of(compute(model(), None, dep, stamp=T1))
    assert (cond["status"], cond["reason"], cond["message"]) == (status, reason, message)


def test_scaled_to_zero_by_keda_says_what_wakes_it():
    cond = ready_of(compute(model(), None, deployment(0, 0), stamp=T1, autoscaled=True))
    assert (cond["status"], cond["reason"]) == ("True", "ScaledToZero")
    assert cond["message"] == "scaled to zero: no workers run; KEDA starts a worker when a request is queued"


def test_ready_transition_updates_time():
    before = compute(model(), None, deployment(3, 1), stamp=T1)
    after = compute(model(status=before), None, deployment(3, 3), stamp=T2)
    assert ready_of(before)["status"] == "False"
    assert ready_of(after)["status"] == "True"
    assert ready_of(after)["lastTransitionTime"] == T2


def test_extra_conditions():
    extra = (
        Condition("Autoscaling", None, "KedaMissing", "KEDA is not installed"),
        Condition("Other", True, "Fine", "ok"),
    )
    s = compute(model(), None, deployment(), extra_conditions=extra, stamp=T1)
    assert [(c["type"], c["status"], c["reason"]) for c in s["conditions"]] == [
        ("Ready", "True", "WorkersReady"),
        ("Autoscaling", "Unknown", "KedaMissing"),
        ("Other", "True", "Fine"),
    ]


def test_urgent():
    base = compute(model(), None, deployment(3, 1), stamp=T1)
    # A new model's first status is batched, unless it already failed.
    assert urgent(None, base) is False
    assert urgent({}, base) is False
    assert urgent({}, compute(model(), CONFIG_ERROR, deployment(3, 1), stamp=T1)) is True
    assert urgent(base, copy.deepcopy(base)) is False

    # State change.
    failed = compute(model(status=base), CONFIG_ERROR, deployment(3, 1), stamp=T1)
    assert urgent(base, failed) is True

    # New generation.
    gen2 = compute(model(generation=2, rv="150", status=base), None, deployment(3, 1), stamp=T1)
    assert urgent(base, gen2) is True

    # Condition flip (Ready False -> True).
    flipped = compute(model(status=base), None, deployment(3, 3), stamp=T1)
    assert urgent(base, flipped) is True

    # Only the ready count moves, Ready stays False: may be batched.
    counter = compute(model(status=base), None, deployment(3, 2), stamp=T1)
    assert counter["readyReplicas"] == 2
    assert differs(base, counter) is True
    assert urgent(base, counter) is False


def test_ready_false_while_deployment_rolls_out():
    dep = deployment(3, 3)
    dep["metadata"]["generation"] = 2
    dep["status"].update({"observedGeneration": 1, "updatedReplicas": 0})
    cond = ready_of(compute(model(generation=2, rv="150"), None, dep, stamp=T1))
    assert cond["status"] == "False"
