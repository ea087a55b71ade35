"""The watch table: where each cache's changes go, and at which speed (watches.py)."""

from __future__ import annotations

from aimodel_operator import builders
from aimodel_operator.controller import Controller
from aimodel_operator.kube import Kube
from aimodel_operator.settings import Settings
from aimodel_operator.watches import WATCHES, Speed
from fakekube import FakeApi

NS = "ns"


def model(name: str, secret: str | None = None) -> dict:
    spec: dict = {"type": "remote", "model": "gpt", "image": "i", "baseURL": "https://x/v1"}
    if secret:
        spec["apiKeySecretRef"] = {"name": secret}
    return {"metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1"}, "spec": spec}


def controller_with(*names: str) -> Controller:
    c = Controller(Kube.over(FakeApi()), Settings())
    for name in names:
        c.models._apply("ADDED", model(name, secret="shared" if name != "plain" else None))
    # Taken out of the queue and marked settled, as after a reconcile that found everything in place.
    while len(c.queue):
        key = c.queue._items.popleft()
        c.queue._queued.discard(key)
        c._settled[key] = ("1", None)
    return c


def queued(c: Controller) -> tuple[list, list]:
    return list(c.queue._urgent), list(c.queue._items)


def pod(model_name: str) -> dict:
    return {"metadata": {"name": "p", "namespace": NS, "labels": {builders.LABEL_MODEL: model_name}}}


def test_every_row_names_a_cache_once_and_only_models_and_reports_have_their_own_handler():
    assert len({w.name for w in WATCHES}) == len(WATCHES)
    assert {w.name for w in WATCHES if w.route is None} == {"models", "events"}


def test_a_pod_change_writes_status_only_and_the_children_stay_settled():
    c = controller_with("m", "plain")
    c.pods.handler("MODIFIED", pod("m"))
    assert queued(c) == ([], [(NS, "m")])
    assert (NS, "m") in c._settled


def test_a_childs_change_reconciles_its_owner_in_full():
    c = controller_with("m")
    deployment = {
        "metadata": {
            "name": builders.deployment_name("m"),
            "namespace": NS,
            "ownerReferences": [{"kind": "AIModel", "name": "m", "uid": "uid-m", "controller": True}],
        }
    }
    c.children["Deployment"].handler("MODIFIED", deployment)
    assert queued(c) == ([], [(NS, "m")])
    assert (NS, "m") not in c._settled


def test_a_secret_change_reconciles_the_models_naming_it_in_full():
    c = controller_with("a", "b", "plain")
    c.secret_names.handler("MODIFIED", {"metadata": {"name": "shared", "namespace": NS}})
    assert sorted(queued(c)[1]) == [(NS, "a"), (NS, "b")]
    assert (NS, "plain") in c._settled and (NS, "a") not in c._settled


def test_only_a_new_replica_set_is_routed_and_unknown_models_are_not_queued():
    c = controller_with("m")
    rs = {"metadata": {"name": "m-deployment-1", "namespace": NS, "labels": {builders.LABEL_MODEL: "m"}}}
    c.replica_sets.handler("MODIFIED", rs)
    assert queued(c) == ([], [])
    c.replica_sets.handler("ADDED", rs)
    assert queued(c) == ([], [(NS, "m")])
    c.pods.handler("ADDED", pod("nobody"))
    assert queued(c) == ([], [(NS, "m")])


def test_a_report_goes_ahead_of_everything_queued():
    c = controller_with("m", "plain")
    c.pods.handler("MODIFIED", pod("m"))
    report = {
        "metadata": {"name": "e", "namespace": NS, "resourceVersion": "5"},
        "type": "Warning",
        "reason": "AuthenticationError",
        "message": "bad key",
        "involvedObject": {"kind": "AIModel", "namespace": NS, "name": "plain"},
    }
    c.caches["events"].handler("ADDED", report)
    assert queued(c) == ([(NS, "plain")], [(NS, "m")])
    assert Speed.URGENT in {w.speed for w in WATCHES}


def test_a_row_without_a_route_needs_a_handler_of_its_own():
    import pytest

    from aimodel_operator.informer import strip
    from aimodel_operator.kube import PODS
    from aimodel_operator.watches import Watch

    c = controller_with()
    with pytest.raises(ValueError, match="'stray' has neither a route nor a handler of its own"):
        c._handler(Watch("stray", PODS, strip, None, Speed.STATUS))
