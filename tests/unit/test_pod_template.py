"""spec.template merged into the workers' pod: every field kind, the worker container by name,
the operator's contract kept, restricted by default (builders/pod.py); quantities compared as
amounts (diff.py); the CRD's schema and its size (podtemplate.py)."""

from __future__ import annotations

import json

import pytest

from aimodel_contract import WORKER_ENV
from aimodel_operator import builders, crd, diff, podtemplate
from aimodel_operator.builders import Capabilities
from aimodel_operator.builders.pod import RESTRICTED
from aimodel_operator.settings import Settings


def model(template: dict | None = None) -> dict:
    spec = {"type": "local", "model": "TinyLlama-1.1B", "replicas": 3, "image": "worker:1", "maxProcessNum": 16}
    if template is not None:
        spec["template"] = template
    return {"metadata": {"name": "m", "namespace": "ns", "uid": "u1", "generation": 1}, "spec": spec}


def pod(template: dict | None = None) -> dict:
    return builders.deployment(model(template), Settings(), Capabilities())["spec"]["template"]


def worker_of(p: dict) -> dict:
    return next(c for c in p["spec"]["containers"] if c["name"] == "worker")


def test_without_a_template_the_worker_runs_restricted_and_nothing_else_is_added():
    p = pod()
    assert [c["name"] for c in p["spec"]["containers"]] == ["worker"]
    worker = worker_of(p)
    assert worker["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "resources" not in worker, "no guessed resources: the pod stays as the user left it"
    assert set(p["spec"]) == {"serviceAccountName", "containers"}


def test_the_worker_container_takes_what_the_template_adds():
    gpu = {"limits": {"nvidia.com/gpu": 1, "memory": "8Gi"}, "requests": {"cpu": "2", "memory": "8Gi"}}
    probe = {"httpGet": {"path": "/healthz", "port": 8081}}
    template = {
        "spec": {
            "containers": [
                {
                    "name": "worker",
                    "resources": gpu,
                    "env": [{"name": "LOCAL_API_URL", "value": "http://127.0.0.1:8000"}],
                    "envFrom": [{"configMapRef": {"name": "extra"}}],
                    "volumeMounts": [{"name": "cache", "mountPath": "/models"}],
                    "ports": [{"containerPort": 9000, "name": "metrics"}],
                    "readinessProbe": probe,
                    "imagePullPolicy": "Always",
                    "securityContext": {"runAsUser": 10001},
                }
            ]
        }
    }
    worker = worker_of(pod(template))
    assert worker["image"] == "worker:1"
    assert worker["resources"] == gpu and worker["readinessProbe"] == probe and worker["imagePullPolicy"] == "Always"
    names = [e["name"] for e in worker["env"]]
    assert names[-1] == "LOCAL_API_URL" and "MODEL_NAME" in names
    assert worker["envFrom"] == [{"configMapRef": {"name": "extra"}}]
    assert worker["volumeMounts"] == [{"name": "cache", "mountPath": "/models"}]
    assert worker["ports"] == [{"containerPort": 9000, "name": "metrics"}]
    # The template's securityContext adds to the restricted default.
    assert worker["securityContext"] == {**RESTRICTED, "runAsUser": 10001}


def test_a_template_may_loosen_the_default_security_context():
    template = {"spec": {"containers": [{"name": "worker", "securityContext": {"runAsNonRoot": False}}]}}
    assert worker_of(pod(template))["securityContext"]["runAsNonRoot"] is False


def test_the_operators_contract_wins_over_the_template():
    template = {
        "metadata": {"labels": {"model.youxam.com/aimodel": "other", "team": "a"}, "annotations": {"x": "y"}},
        "spec": {
            "serviceAccountName": "someone",
            "automountServiceAccountToken": False,
            "initContainers": [{"name": "worker", "image": "evil"}],
            "containers": [
                {"name": "worker", "image": "evil", "env": [{"name": "API_KEY", "value": "stolen"}, {"name": "OK"}]}
            ],
        },
    }
    p = pod(template)
    assert p["metadata"]["labels"]["model.youxam.com/aimodel"] == "m" and p["metadata"]["labels"]["team"] == "a"
    assert p["metadata"]["annotations"]["x"] == "y" and builders.ANNOTATION_SECRET_HASH in p["metadata"]["annotations"]
    assert p["spec"]["serviceAccountName"] == builders.service_account_name("m")
    assert "automountServiceAccountToken" not in p["spec"] and "initContainers" not in p["spec"]
    worker = worker_of(p)
    assert worker["image"] == "worker:1"
    api_keys = [e for e in worker["env"] if e["name"] == "API_KEY"]
    assert api_keys == [{"name": "API_KEY"}], "the operator's API_KEY, not the template's"
    assert worker["env"][-1] == {"name": "OK"}


def test_pod_fields_sidecars_and_volumes_are_added_as_given():
    sidecar = {
        "name": "model-server",
        "image": "llama-server:1",
        "restartPolicy": "Always",
        "startupProbe": {"httpGet": {"path": "/health", "port": 8000}},
    }
    given = {
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}],
        "priorityClassName": "high",
        "runtimeClassName": "nvidia",
        "imagePullSecrets": [{"name": "registry"}],
        "securityContext": {"fsGroup": 2000},
        "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "20Gi"}}],
        "initContainers": [sidecar],
        "containers": [{"name": "exporter", "image": "exporter:1"}],
        "terminationGracePeriodSeconds": 120,
    }
    p = pod({"spec": given})
    for field in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName"):
        assert p["spec"][field] == given[field]
    for field in ("runtimeClassName", "imagePullSecrets", "securityContext", "volumes"):
        assert p["spec"][field] == given[field]
    assert p["spec"]["terminationGracePeriodSeconds"] == 120
    assert p["spec"]["initContainers"] == [sidecar]
    assert [c["name"] for c in p["spec"]["containers"]] == ["worker", "exporter"]


def test_a_template_change_changes_the_desired_hash_and_an_equal_one_does_not():
    base = builders.deployment(model(), Settings(), Capabilities())
    same = builders.deployment(model({}), Settings(), Capabilities())
    changed = builders.deployment(model({"spec": {"nodeSelector": {"pool": "gpu"}}}), Settings(), Capabilities())
    key = builders.ANNOTATION_HASH
    assert base["metadata"]["annotations"][key] == same["metadata"]["annotations"][key]
    assert base["metadata"]["annotations"][key] != changed["metadata"]["annotations"][key]


@pytest.mark.parametrize(
    ("live", "desired", "same"),
    [
        ("1", "1000m", True),
        ("512Mi", "0.5Gi", True),
        ("2Gi", "2048Mi", True),
        ("1k", "1000", True),
        (1, "1", True),
        ("1", "2", False),
        ("1Gi", "1G", False),
    ],
)
def test_quantities_the_api_server_rewrites_are_not_drift(live, desired, same):
    actual = {"resources": {"limits": {"memory": live}}}
    wanted = {"resources": {"limits": {"memory": desired}}}
    assert diff.contains(actual, wanted) is same


def test_lists_merged_by_key_tolerate_what_the_api_server_or_others_add():
    live = {"volumes": [{"name": "other"}, {"name": "cache", "emptyDir": {"sizeLimit": "20Gi"}}]}
    assert diff.contains(live, {"volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "20480Mi"}}]})


def test_the_crd_carries_the_typed_template_and_stays_small():
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    template = schema["template"]["properties"]["spec"]["properties"]
    container = template["containers"]["items"]["properties"]
    assert container["resources"]["properties"]["limits"]["additionalProperties"]["x-kubernetes-int-or-string"]
    assert template["containers"]["x-kubernetes-list-map-keys"] == ["name"]
    assert "serviceAccountName" in template, "present so that the rule can refuse it by name"
    compact = len(json.dumps(crd.crd(), separators=(",", ":")))
    # kubectl's client-side apply keeps the whole object in an annotation (at most 256 KiB).
    assert compact < 200 * 1024, compact


def test_every_contract_variable_has_a_rule_that_names_it():
    for name in WORKER_ENV:
        [rule] = [r for r in podtemplate.SPEC_RULES if f"e.name == '{name}'" in r["rule"]]
        assert rule["message"].startswith(f"spec.template.spec.containers[worker].env: {name} is set by the operator")
