"""The controller's secondary indexes are the informers' (Informer.add_index): kept with the
caches, so what an object change or a model's deletion means for them needs no bookkeeping."""

from __future__ import annotations

from aimodel_operator import builders
from aimodel_operator.caches import BY_MODEL, BY_SECRET_REF
from aimodel_operator.controller import Controller
from aimodel_operator.kube import Kube
from aimodel_operator.settings import Settings
from fakekube import FakeApi

NS = "ns"


def model(name: str, secret: str | None = None, rv: str = "1") -> dict:
    spec: dict = {"type": "remote", "model": "gpt", "image": "i", "baseURL": "https://x/v1"}
    if secret:
        spec["apiKeySecretRef"] = {"name": secret}
    return {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": rv, "generation": 1},
        "spec": spec,
    }


def worker_pod(name: str, model_name: str, rv: str = "1") -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "resourceVersion": rv,
            "labels": {builders.LABEL_MODEL: model_name},
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"{model_name}-deployment-abc", "controller": True}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def replica_set(name: str, model_name: str, revision: int, rv: str = "1") -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "resourceVersion": rv,
            "labels": {builders.LABEL_MODEL: model_name},
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
        }
    }


async def test_pods_and_replica_sets_are_found_by_model_and_forgotten_with_the_cache():
    c = Controller(Kube.over(FakeApi()), Settings())
    c.models._apply("ADDED", model("m"))
    c.pods._apply("ADDED", worker_pod("p1", "m"))
    c.pods._apply("ADDED", worker_pod("p2", "m"))
    c.pods._apply("ADDED", worker_pod("q1", "other"))
    assert c.pods.by_index(BY_MODEL, "ns/m") == [(NS, "p1"), (NS, "p2")]
    c.replica_sets._apply("ADDED", replica_set("m-deployment-a", "m", 1))
    c.replica_sets._apply("ADDED", replica_set("m-deployment-b", "m", 2))
    assert c.view.revisions((NS, "m")) == {"m-deployment-a": 1, "m-deployment-b": 2}
    # A rollback makes an old ReplicaSet the newest: its revision is read from the cache.
    c.replica_sets._apply("MODIFIED", replica_set("m-deployment-a", "m", 3, rv="2"))
    assert c.view.revisions((NS, "m")) == {"m-deployment-a": 3, "m-deployment-b": 2}
    c.pods._apply("DELETED", worker_pod("p1", "m", rv="2"))
    c.replica_sets._apply("DELETED", replica_set("m-deployment-b", "m", 2, rv="3"))
    assert c.pods.by_index(BY_MODEL, "ns/m") == [(NS, "p2")]
    assert c.view.revisions((NS, "m")) == {"m-deployment-a": 3}
    # A pod that lost its model label is no longer the model's.
    unlabelled = worker_pod("p2", "m", rv="3")
    unlabelled["metadata"]["labels"] = {}
    c.pods._apply("MODIFIED", unlabelled)
    assert c.pods.by_index(BY_MODEL, "ns/m") == []


async def test_a_secret_change_wakes_the_models_that_reference_it_and_an_unreferenced_secret_is_forgotten():
    c = Controller(Kube.over(FakeApi()), Settings())
    c.models._apply("ADDED", model("a", secret="shared"))
    c.models._apply("ADDED", model("b", secret="shared"))
    c.models._apply("ADDED", model("c"))
    assert c.models.by_index(BY_SECRET_REF, "ns/shared") == [(NS, "a"), (NS, "b")]
    c._settled = {(NS, "a"): ("1", None), (NS, "b"): ("1", None), (NS, "c"): ("1", None)}
    c.secret_names.handler("MODIFIED", {"metadata": {"name": "shared", "namespace": NS, "resourceVersion": "9"}})
    # Woken in full: their children are built from the Secret; c is not.
    assert set(c._settled) == {(NS, "c")}

    c.refs._values[(NS, "shared")] = (9, {"apiKey": "hash"})
    c.models._apply("MODIFIED", model("a", secret="own", rv="2"))
    assert (NS, "shared") in c.refs._values, "b still references it"
    c.models._apply("DELETED", model("b", secret="shared", rv="3"))
    assert (NS, "shared") not in c.refs._values, "no model references it anymore"
    assert c.models.by_index(BY_SECRET_REF, "ns/own") == [(NS, "a")]


async def test_a_deleted_model_is_forgotten_everywhere_in_one_call():
    c = Controller(Kube.over(FakeApi()), Settings())
    key = (NS, "m")
    c.models._apply("ADDED", model("m", secret="s"))
    c.announcer.troubled[key] = frozenset({"Ready"})
    c._settled[key] = ("1", None)
    c.applier.strangers[key] = {("Secret", "m-worker-secrets")}
    c.status_writer._last[key] = 1.0
    c.models._apply("DELETED", model("m", secret="s", rv="2"))
    assert key not in c.models
    assert key not in c.announcer.troubled and key not in c._settled
    assert key not in c.applier.strangers, "the stranger marks of a deleted model are dropped too"
    assert key not in c.status_writer._last
    assert c.models.by_index(BY_SECRET_REF, "ns/s") == []
