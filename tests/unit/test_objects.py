"""Who controls an object: the one set of answers every ownership check of the operator uses."""

from aimodel_operator import objects

MODEL_REF = {"apiVersion": "model.youxam.com/v1alpha1", "kind": "AIModel", "name": "m", "uid": "u-1"}


def obj(*refs: dict, namespace: str = "ns") -> dict:
    return {"metadata": {"name": "o", "namespace": namespace, "ownerReferences": list(refs)}}


def test_the_controller_is_the_reference_marked_controller():
    owner_only = {**MODEL_REF, "uid": "u-2"}
    o = obj(owner_only, {**MODEL_REF, "controller": True})
    assert objects.controller_of(o) == {**MODEL_REF, "controller": True}
    assert objects.controller_uid(o) == "u-1"
    assert objects.is_controlled_by(o, "u-1")
    # An owner that is not the controller does not control.
    assert not objects.is_controlled_by(o, "u-2")
    assert not objects.is_controlled_by(obj(owner_only), "u-2")
    assert objects.controller_of(obj({**MODEL_REF, "controller": False})) is None


def test_nothing_is_controlled_by_an_empty_uid_or_without_metadata():
    assert not objects.is_controlled_by(obj({**MODEL_REF, "uid": "", "controller": True}), "")
    assert objects.controller_of(None) is None
    assert objects.controller_of({}) is None
    assert objects.controller_of({"metadata": {"ownerReferences": None}}) is None


def test_an_aimodel_controller_is_one_of_this_api_group():
    ours = obj({**MODEL_REF, "controller": True})
    assert objects.aimodel_controller(ours) is not None
    other_group = obj({**MODEL_REF, "apiVersion": "other.example/v1", "controller": True})
    assert objects.aimodel_controller(other_group) is None
    other_kind = obj({**MODEL_REF, "kind": "ReplicaSet", "controller": True})
    assert objects.aimodel_controller(other_kind) is None


def test_keys():
    o = obj({**MODEL_REF, "controller": True}, namespace="team-a")
    assert objects.key_of(o) == ("team-a", "o")
    assert objects.owner_key(o) == ("team-a", "m")
    assert objects.owner_key(o, kind="ReplicaSet") is None
    assert objects.owner_key(obj(MODEL_REF)) is None
    assert objects.key_of({"metadata": {"name": "cluster-scoped"}}) == ("", "cluster-scoped")
