"""Drift detection: does a live object (with server defaults) still hold the desired manifest?"""

import copy

from aimodel_operator import builders
from aimodel_operator.builders import ANNOTATION_HASH, Capabilities
from aimodel_operator.diff import contains, needs_apply
from aimodel_operator.settings import Settings

MODEL = {
    "apiVersion": "model.youxam.com/v1alpha1",
    "kind": "AIModel",
    "metadata": {"name": "ai-model-sample", "namespace": "default", "uid": "u1", "generation": 1},
    "spec": {
        "type": "remote",
        "model": "gpt-3.5-turbo",
        "apiKey": "xxxxxxx",
        "baseURL": "https://api.openai.com",
        "replicas": 3,
        "image": "user/image:tag",
        "maxProcessNum": 256,
    },
}


def desired_deployment() -> dict:
    return builders.deployment(MODEL, Settings(), Capabilities())


def desired_role() -> dict:
    return builders.role(MODEL)


def as_served(desired: dict) -> dict:
    """The object as the API server returns it: our fields plus defaults, metadata and status."""
    actual = copy.deepcopy(desired)
    meta = actual["metadata"]
    meta.update(
        {
            "uid": "d-uid",
            "resourceVersion": "4711",
            "generation": 2,
            "creationTimestamp": "2024-07-10T17:28:45Z",
            "managedFields": [{"manager": "aimodel-operator", "operation": "Apply"}],
        }
    )
    meta["annotations"]["deployment.kubernetes.io/revision"] = "1"
    meta["labels"]["extra"] = "someone-else"
    # Another controller co-owning the object (not as controller) is not drift.
    meta["ownerReferences"].append({"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "other-uid"})
    if actual["kind"] == "Deployment":
        spec = actual["spec"]
        spec.update({"strategy": {"type": "RollingUpdate"}, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600})
        pod = spec["template"]["spec"]
        pod.update({"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"})
        pod["containers"][0].update(
            {"imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"}
        )
        for env in pod["containers"][0]["env"]:
            if "fieldRef" in env.get("valueFrom", {}):
                env["valueFrom"]["fieldRef"]["apiVersion"] = "v1"
        actual["status"] = {"replicas": 3, "readyReplicas": 3, "observedGeneration": 2}
    return actual


def test_missing_needs_apply():
    assert needs_apply(desired_deployment(), None) is True


def test_equal_does_not_need_apply():
    desired = desired_deployment()
    assert needs_apply(desired, copy.deepcopy(desired)) is False


def test_server_defaults_are_not_drift():
    for desired in builders.children(MODEL, Settings(pulsar_token="t"), Capabilities()):
        assert needs_apply(desired, as_served(desired)) is False, desired["kind"]


def test_extra_owner_reference_by_uid_is_not_drift():
    desired = desired_role()
    actual = copy.deepcopy(desired)
    actual["metadata"]["ownerReferences"].insert(0, {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "zzz"})
    assert needs_apply(desired, actual) is False


def test_owner_reference_changed_is_drift():
    desired = desired_role()
    actual = copy.deepcopy(desired)
    actual["metadata"]["ownerReferences"][0]["uid"] = "another-uid"
    assert needs_apply(desired, actual) is True
    actual = copy.deepcopy(desired)
    actual["metadata"]["ownerReferences"][0]["controller"] = False
    assert needs_apply(desired, actual) is True


def test_hash_differs_needs_apply():
    desired = desired_deployment()
    actual = as_served(desired)
    actual["metadata"]["annotations"][ANNOTATION_HASH] = "0000000000000000"
    assert needs_apply(desired, actual) is True


def test_hash_missing_needs_apply():
    desired = desired_deployment()
    actual = as_served(desired)
    del actual["metadata"]["annotations"]
    assert needs_apply(desired, actual) is True


def test_field_edited_is_drift():
    desired = desired_deployment()
    actual = as_served(desired)
    actual["spec"]["replicas"] = 5
    assert needs_apply(desired, actual) is True

    actual = as_served(desired)
    actual["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/image:latest"
    assert needs_apply(desired, actual) is True

    actual = as_served(desired)
    env = actual["spec"]["template"]["spec"]["containers"][0]["env"]
    next(e for e in env if e["name"] == "MODEL_NAME")["value"] = "other-model"
    assert needs_apply(desired, actual) is True

    actual = as_served(desired)
    actual["metadata"]["labels"]["model.youxam.com/aimodel"] = "someone-else"
    assert needs_apply(desired, actual) is True


def test_env_var_removed_is_drift():
    desired = desired_deployment()
    actual = as_served(desired)
    container = actual["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != "AIMODEL_NAMESPACE"]
    assert needs_apply(desired, actual) is True


def test_env_secret_ref_replaced_by_value_is_drift():
    desired = desired_deployment()
    actual = as_served(desired)
    container = actual["spec"]["template"]["spec"]["containers"][0]
    api_key = next(e for e in container["env"] if e["name"] == "API_KEY")
    api_key.pop("valueFrom")
    api_key["value"] = "xxxxxxx"
    assert needs_apply(desired, actual) is True


def test_role_extra_rule_is_drift():
    desired = desired_role()
    actual = as_served(desired)
    actual["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    assert needs_apply(desired, actual) is True


def test_role_extra_verb_is_drift():
    desired = desired_role()
    actual = as_served(desired)
    actual["rules"][0]["verbs"].append("delete")
    assert needs_apply(desired, actual) is True


def test_role_rule_removed_is_drift():
    desired = desired_role()
    actual = as_served(desired)
    actual["rules"] = []
    assert needs_apply(desired, actual) is True


def test_secret_data_changed_is_drift():
    desired = builders.secret(MODEL, Settings())
    actual = as_served(desired)
    actual["data"]["API_KEY"] = "c3RvbGVu"
    assert needs_apply(desired, actual) is True


def test_contains_basics():
    assert contains({"a": 1, "b": 2}, {"a": 1})
    assert not contains({"a": 1}, {"a": 1, "b": 2})
    assert not contains({"a": "1"}, {"a": 1})
    assert not contains(None, {"a": 1})
    assert not contains({"a": {"b": 1}}, {"a": [1]})
    # Positional lists: same length, items contained in order.
    assert contains([{"x": 1, "y": 2}], [{"x": 1}])
    assert not contains([1, 2], [2, 1])
    assert not contains([1, 2, 3], [1, 2])
    # Map lists (env, containers, ownerReferences): extra items of other managers are theirs, order does not matter.
    assert contains(
        [{"name": "b", "v": 2}, {"name": "a", "v": 1}, {"name": "c"}], [{"name": "a", "v": 1}, {"name": "b"}], "env"
    )
    assert not contains([{"name": "a", "v": 2}], [{"name": "a", "v": 1}], "env")
    assert not contains([{"name": "b"}], [{"name": "a"}], "env")
    # Any other list is atomic, even when its items have names (RoleBinding subjects).
    assert not contains([{"name": "a"}, {"name": "b"}], [{"name": "a"}], "subjects")


def test_role_binding_extra_subject_is_drift():
    desired = builders.role_binding(MODEL)
    actual = as_served(desired)
    actual["subjects"].append({"kind": "ServiceAccount", "name": "intruder", "namespace": "default"})
    assert needs_apply(desired, actual) is True
