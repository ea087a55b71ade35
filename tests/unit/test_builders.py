"""The pure builders: AIModel + operator settings -> child manifests, checked as data."""

import base64
import copy
import json

import pytest

from aimodel_operator import builders
from aimodel_operator.builders import Capabilities
from aimodel_operator.settings import Settings

OWNER = {
    "apiVersion": "model.youxam.com/v1alpha1",
    "kind": "AIModel",
    "name": "ai-model-sample",
    "uid": "u1",
    "controller": True,
    "blockOwnerDeletion": True,
}
LABELS = {
    "app.kubernetes.io/name": "aimodel-worker",
    "app.kubernetes.io/instance": "ai-model-sample",
    "app.kubernetes.io/managed-by": "aimodel-operator",
    "model.youxam.com/aimodel": "ai-model-sample",
}
ADMIN = "http://pulsar-admin:8080"
KEDA = Capabilities(keda=True)
NO_KEDA = Capabilities()


def model(spec: dict, name: str = "ai-model-sample", namespace: str = "default") -> dict:
    return {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "metadata": {"name": name, "namespace": namespace, "uid": "u1", "generation": 1, "resourceVersion": "10"},
        "spec": spec,
    }


def local(**extra) -> dict:
    spec = {"type": "local", "model": "TinyLlama-1.1B", "replicas": 3, "image": "user/image:tag", "maxProcessNum": 256}
    return model({**spec, **extra})


def remote(**extra) -> dict:
    spec = {
        "type": "remote",
        "model": "gpt-3.5-turbo",
        "apiKey": "xxxxxxx",
        "baseURL": "https://api.openai.com",
        "replicas": 3,
        "image": "user/image:tag",
        "maxProcessNum": 256,
    }
    return model({**spec, **extra})


def keda_local(**extra) -> dict:
    return local(msgBacklogThreshold=2, **extra)


def container(dep: dict) -> dict:
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(dep: dict) -> dict[str, dict]:
    env = container(dep)["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), names
    return {e["name"]: e for e in env}


def plain(env: dict[str, dict]) -> dict[str, str | None]:
    return {k: v.get("value") for k, v in env.items() if "valueFrom" not in v}


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _kinds(children: list[dict]) -> list[tuple[str, str]]:
    return [(c["kind"], c["metadata"]["name"]) for c in children]


OWN_SECRET = "ai-model-sample-worker-secrets"
SECRET_CHILD = ("Secret", OWN_SECRET)
# Without anything secret to hold there is no Secret at all.
BASE_CHILDREN = [
    ("ServiceAccount", "ai-model-sample-worker"),
    ("Role", "ai-model-sample-worker-events"),
    ("RoleBinding", "ai-model-sample-worker-events"),
    ("Deployment", "ai-model-sample-deployment"),
]
# With an inline apiKey or an operator token the Secret comes right before the Deployment.
SECRET_CHILDREN = [*BASE_CHILDREN[:3], SECRET_CHILD, BASE_CHILDREN[3]]


def own_secret_env(var: str, key: str) -> dict:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": OWN_SECRET, "key": key}}}


# --- names and metadata ---------------------------------------------------------------------------------------------


def test_names():
    assert builders.deployment_name("ai-model-sample") == "ai-model-sample-deployment"
    assert builders.scaled_object_name("ai-model-sample") == "ai-model-sample-scaledobject"
    assert builders.service_account_name("ai-model-sample") == "ai-model-sample-worker"
    assert builders.role_name("ai-model-sample") == "ai-model-sample-worker-events"
    assert builders.secret_name("ai-model-sample") == "ai-model-sample-worker-secrets"
    assert builders.trigger_auth_name("ai-model-sample") == "ai-model-sample-pulsar-auth"


@pytest.mark.parametrize(
    "m,settings,caps",
    [
        (local(), Settings(), NO_KEDA),
        (remote(), Settings(), NO_KEDA),
        (keda_local(), Settings(pulsar_admin_url=ADMIN, pulsar_token="tok"), KEDA),
    ],
    ids=["local", "remote", "keda-token"],
)
def test_every_child_owned_labelled_namespaced(m, settings, caps):
    children = builders.children(m, settings, caps)
    assert children
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "default"
        assert meta["ownerReferences"] == [OWNER]
        assert [r for r in meta["ownerReferences"] if r.get("controller")] == [OWNER]
        assert meta["labels"] == LABELS
        assert set(meta["annotations"]) == {builders.ANNOTATION_HASH}
        assert len(meta["annotations"][builders.ANNOTATION_HASH]) == 16
        assert meta["name"].startswith("ai-model-sample-")


def test_children_in_other_namespace():
    m = model({"type": "local", "model": "m", "image": "i"}, name="x", namespace="team-a")
    for child in builders.children(m, Settings(), NO_KEDA):
        assert child["metadata"]["namespace"] == "team-a"
    rb = builders.role_binding(m)
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "x-worker", "namespace": "team-a"}]
    assert env_of(builders.deployment(m, Settings(), NO_KEDA))["AIMODEL_NAMESPACE"]["value"] == "team-a"


# --- Deployment -----------------------------------------------------------------------------------------------------

ENV_NAMES = [
    "NODE_TYPE",
    "MODEL_NAME",
    "API_URL",
    "API_KEY",
    "MAX_PROCESS_NUM",
    "AIMODEL_NAME",
    "AIMODEL_NAMESPACE",
    "PULSAR_URL",
    "PULSAR_TOKEN",
    "RES_TOPIC_NAME",
    "POD_NAME",
]


def test_local_deployment():
    dep = builders.deployment(local(), Settings(), NO_KEDA)
    assert dep["apiVersion"] == "apps/v1"
    assert dep["kind"] == "Deployment"
    assert dep["metadata"]["name"] == "ai-model-sample-deployment"
    spec = dep["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"] == {"matchLabels": {"model.youxam.com/aimodel": "ai-model-sample"}}
    template = spec["template"]
    assert template["metadata"]["labels"] == LABELS
    # The selector must select the pods.
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["spec"]["serviceAccountName"] == "ai-model-sample-worker"
    c = container(dep)
    assert c["name"] == "worker"
    assert c["image"] == "user/image:tag"


def test_local_env_exact():
    env = env_of(builders.deployment(local(), Settings(), NO_KEDA))
    assert list(env) == ENV_NAMES
    assert plain(env) == {
        "NODE_TYPE": "local",
        "MODEL_NAME": "TinyLlama-1.1B",
        "API_URL": None,  # empty: the API server would drop "value": ""
        "API_KEY": None,  # nothing secret: plain and empty, no Secret to refer to
        "MAX_PROCESS_NUM": "256",
        "AIMODEL_NAME": "ai-model-sample",
        "AIMODEL_NAMESPACE": "default",
        "PULSAR_URL": "pulsar://localhost:6650",
        "PULSAR_TOKEN": None,  # the operator has no token
        "RES_TOPIC_NAME": "res-topic",
    }
    assert env["API_URL"] == {"name": "API_URL"}
    assert env["API_KEY"] == {"name": "API_KEY"}
    assert env["PULSAR_TOKEN"] == {"name": "PULSAR_TOKEN"}
    assert env["POD_NAME"] == {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def test_local_env_with_token():
    env = env_of(builders.deployment(local(), Settings(pulsar_token="tok"), NO_KEDA))
    assert list(env) == ENV_NAMES
    assert env["API_KEY"] == {"name": "API_KEY"}
    assert env["PULSAR_TOKEN"] == own_secret_env("PULSAR_TOKEN", "PULSAR_TOKEN")


def test_remote_env_exact():
    env = env_of(builders.deployment(remote(), Settings(), NO_KEDA))
    assert list(env) == ENV_NAMES
    assert plain(env) == {
        "NODE_TYPE": "remote",
        "MODEL_NAME": "gpt-3.5-turbo",
        "API_URL": "https://api.openai.com",
        "MAX_PROCESS_NUM": "256",
        "AIMODEL_NAME": "ai-model-sample",
        "AIMODEL_NAMESPACE": "default",
        "PULSAR_URL": "pulsar://localhost:6650",
        "PULSAR_TOKEN": None,
        "RES_TOPIC_NAME": "res-topic",
    }
    assert env["API_KEY"] == own_secret_env("API_KEY", "API_KEY")
    assert env["PULSAR_TOKEN"] == {"name": "PULSAR_TOKEN"}


def test_remote_env_with_token():
    env = env_of(builders.deployment(remote(), Settings(pulsar_token="tok"), NO_KEDA))
    assert list(env) == ENV_NAMES
    assert env["API_KEY"] == own_secret_env("API_KEY", "API_KEY")
    assert env["PULSAR_TOKEN"] == own_secret_env("PULSAR_TOKEN", "PULSAR_TOKEN")


def test_empty_inline_api_key_counts_as_unset():
    m = remote(apiKey="")
    env = env_of(builders.deployment(m, Settings(), NO_KEDA))
    assert env["API_KEY"] == {"name": "API_KEY"}
    assert builders.secret_data(m, Settings()) == {}
    assert SECRET_CHILD not in _kinds(builders.children(m, Settings(), NO_KEDA))


def test_env_defaults_when_unset():
    m = model({"type": "local", "model": "TinyLlama-1.1B", "image": "user/image:tag"})
    dep = builders.deployment(m, Settings(), NO_KEDA)
    env = env_of(dep)
    assert env["MAX_PROCESS_NUM"] == {"name": "MAX_PROCESS_NUM", "value": "128"}
    assert dep["spec"]["replicas"] == 1


def test_env_from_operator_settings():
    settings = Settings(
        pulsar_admin_url=ADMIN, pulsar_url="pulsar://broker:6650", pulsar_token="tok-123", res_topic_name="results"
    )
    dep = builders.deployment(local(), settings, NO_KEDA)
    env = env_of(dep)
    assert env["PULSAR_URL"]["value"] == "pulsar://broker:6650"
    assert env["RES_TOPIC_NAME"]["value"] == "results"
    assert env["PULSAR_TOKEN"] == own_secret_env("PULSAR_TOKEN", "PULSAR_TOKEN")
    text = json.dumps(dep)
    # The admin URL configures the operator only; the token only reaches pods through the Secret.
    assert "PULSAR_ADMIN_URL" not in env
    assert ADMIN not in text
    assert "tok-123" not in text


def test_settings_defaults():
    s = Settings()
    assert (s.pulsar_admin_url, s.pulsar_url, s.pulsar_token, s.res_topic_name) == (
        "",
        "pulsar://localhost:6650",
        "",
        "res-topic",
    )
    assert Settings.from_env({}) == s
    assert Settings.from_env({"PULSAR_URL": "", "RES_TOPIC_NAME": ""}) == s
    assert Settings.from_env({"PULSAR_ADMIN_URL": ADMIN, "PULSAR_TOKEN": "t"}) == Settings(
        pulsar_admin_url=ADMIN, pulsar_token="t"
    )


@pytest.mark.parametrize("token", ["", "tok-123"], ids=["no-token", "token"])
def test_api_key_never_in_plain_text_in_deployment(token):
    dep = builders.deployment(remote(), Settings(pulsar_token=token), NO_KEDA)
    text = json.dumps(dep)
    assert "xxxxxxx" not in text
    assert b64("xxxxxxx") not in text
    if token:
        assert token not in text
        assert b64(token) not in text
    secret_vars = {"API_KEY", "PULSAR_TOKEN"} if token else {"API_KEY"}
    for e in container(dep)["env"]:
        if e["name"] in secret_vars:
            assert set(e) == {"name", "valueFrom"}
            assert set(e["valueFrom"]) == {"secretKeyRef"}
            assert e["valueFrom"]["secretKeyRef"]["name"] == OWN_SECRET
        elif e["name"] == "PULSAR_TOKEN":
            assert e == {"name": "PULSAR_TOKEN"}


def test_api_key_secret_ref():
    m = remote()
    del m["spec"]["apiKey"]
    m["spec"]["apiKeySecretRef"] = {"name": "openai", "key": "token"}
    env = env_of(builders.deployment(m, Settings(), NO_KEDA))
    assert env["API_KEY"] == {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "token"}}}
    assert env["PULSAR_TOKEN"] == {"name": "PULSAR_TOKEN"}
    # The key lives in the user's Secret: without a token there is nothing for an own Secret.
    assert builders.secret_data(m, Settings()) == {}
    assert _kinds(builders.children(m, Settings(), NO_KEDA)) == BASE_CHILDREN


def test_api_key_secret_ref_with_token():
    m = remote()
    del m["spec"]["apiKey"]
    m["spec"]["apiKeySecretRef"] = {"name": "openai", "key": "token"}
    settings = Settings(pulsar_token="tok")
    env = env_of(builders.deployment(m, settings, NO_KEDA))
    assert env["API_KEY"] == {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "token"}}}
    # The token still comes from the own Secret, which holds only the token.
    assert env["PULSAR_TOKEN"] == own_secret_env("PULSAR_TOKEN", "PULSAR_TOKEN")
    assert builders.secret(m, settings)["data"] == {"PULSAR_TOKEN": b64("tok")}
    assert _kinds(builders.children(m, settings, NO_KEDA)) == SECRET_CHILDREN


def test_api_key_secret_ref_default_key():
    m = remote()
    del m["spec"]["apiKey"]
    m["spec"]["apiKeySecretRef"] = {"name": "openai"}
    env = env_of(builders.deployment(m, Settings(), NO_KEDA))
    assert env["API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "openai", "key": "apiKey"}}


def test_replicas_without_keda():
    assert builders.deployment(local(), Settings(), NO_KEDA)["spec"]["replicas"] == 3
    assert builders.deployment(local(replicas=0), Settings(), NO_KEDA)["spec"]["replicas"] == 0


@pytest.mark.parametrize(
    "m,settings,caps,has_replicas",
    [
        (keda_local(), Settings(pulsar_admin_url=ADMIN), KEDA, False),
        (keda_local(), Settings(pulsar_admin_url=ADMIN), NO_KEDA, True),
        (keda_local(), Settings(), KEDA, True),
        (local(), Settings(pulsar_admin_url=ADMIN), KEDA, True),
    ],
    ids=["autoscaled", "keda-missing", "admin-url-empty", "no-threshold"],
)
def test_replicas_left_to_keda_only_when_autoscaled(m, settings, caps, has_replicas):
    dep = builders.deployment(m, settings, caps)
    assert ("replicas" in dep["spec"]) is has_replicas
    if has_replicas:
        assert dep["spec"]["replicas"] == 3
    assert builders.autoscaled(m, settings, caps) is not has_replicas
    assert builders.wants_autoscaling(m) is ("msgBacklogThreshold" in m["spec"])


# --- Secret, ServiceAccount, Role, RoleBinding ----------------------------------------------------------------------


def test_secret_is_base64():
    sec = builders.secret(remote(), Settings(pulsar_token="tok"))
    assert sec["apiVersion"] == "v1"
    assert sec["kind"] == "Secret"
    assert sec["metadata"]["name"] == "ai-model-sample-worker-secrets"
    assert sec["type"] == "Opaque"
    assert sec["data"] == {"API_KEY": b64("xxxxxxx"), "PULSAR_TOKEN": b64("tok")}
    assert base64.b64decode(sec["data"]["API_KEY"]) == b"xxxxxxx"
    assert "stringData" not in sec


def test_local_without_token_has_no_secret():
    assert builders.secret_data(local(), Settings()) == {}
    kids = builders.children(local(), Settings(), NO_KEDA)
    assert SECRET_CHILD not in _kinds(kids)
    assert [c for c in kids if c["kind"] == "Secret"] == []


def test_local_with_token_secret_holds_only_pulsar_token():
    settings = Settings(pulsar_token="tok")
    assert builders.secret_data(local(), settings) == {"PULSAR_TOKEN": b64("tok")}
    kids = builders.children(local(), settings, NO_KEDA)
    assert _kinds(kids) == SECRET_CHILDREN
    assert kids[3] == builders.secret(local(), settings)
    assert kids[3]["data"] == {"PULSAR_TOKEN": b64("tok")}


def test_remote_without_token_secret_holds_only_api_key():
    assert builders.secret_data(remote(), Settings()) == {"API_KEY": b64("xxxxxxx")}
    kids = builders.children(remote(), Settings(), NO_KEDA)
    assert _kinds(kids) == SECRET_CHILDREN
    assert kids[3]["data"] == {"API_KEY": b64("xxxxxxx")}


def test_remote_inline_api_key_with_token_secret_has_both_keys():
    settings = Settings(pulsar_token="tok")
    assert builders.secret_data(remote(), settings) == {"API_KEY": b64("xxxxxxx"), "PULSAR_TOKEN": b64("tok")}
    kids = builders.children(remote(), settings, NO_KEDA)
    assert _kinds(kids) == SECRET_CHILDREN
    assert kids[3] == builders.secret(remote(), settings)
    assert kids[3]["data"] == {"API_KEY": b64("xxxxxxx"), "PULSAR_TOKEN": b64("tok")}


def test_service_account():
    sa = builders.service_account(local())
    assert (sa["apiVersion"], sa["kind"], sa["metadata"]["name"]) == ("v1", "ServiceAccount", "ai-model-sample-worker")
    assert sa["automountServiceAccountToken"] is True


def test_role_grants_only_event_create_patch():
    r = builders.role(local())
    assert r["apiVersion"] == "rbac.authorization.k8s.io/v1"
    assert r["kind"] == "Role"
    assert r["metadata"]["name"] == "ai-model-sample-worker-events"
    assert r["rules"] == [{"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}]


def test_role_binding_binds_service_account():
    rb = builders.role_binding(local())
    assert rb["apiVersion"] == "rbac.authorization.k8s.io/v1"
    assert rb["kind"] == "RoleBinding"
    assert rb["metadata"]["name"] == "ai-model-sample-worker-events"
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "ai-model-sample-worker-events",
    }
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "ai-model-sample-worker", "namespace": "default"}]


# --- KEDA -----------------------------------------------------------------------------------------------------------


def test_scaled_object():
    so = builders.scaled_object(keda_local(), Settings(pulsar_admin_url=ADMIN))
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["kind"] == "ScaledObject"
    assert so["metadata"]["name"] == "ai-model-sample-scaledobject"
    assert so["metadata"]["ownerReferences"] == [OWNER]
    assert so["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ai-model-sample-deployment"},
        "minReplicaCount": 1,
        "maxReplicaCount": 100,
        "triggers": [
            {
                "type": "pulsar",
                "metadata": {
                    "adminURL": ADMIN,
                    "topic": "persistent://public/default/model-TinyLlama-1.1B",
                    "subscription": "model-TinyLlama-1.1B-subscription",
                    "msgBacklogThreshold": "2",
                },
            }
        ],
    }


def test_scaled_object_min_max_override():
    so = builders.scaled_object(keda_local(minReplicas=0, maxReplicas=7), Settings(pulsar_admin_url=ADMIN))
    assert so["spec"]["minReplicaCount"] == 0
    assert so["spec"]["maxReplicaCount"] == 7
    so = builders.scaled_object(keda_local(minReplicas=2), Settings(pulsar_admin_url=ADMIN))
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (2, 100)


def test_scaling_knobs_are_passed_to_the_scaled_object_only_when_set():
    so = builders.scaled_object(
        keda_local(pollingInterval=2, cooldownPeriod=0, scaleDownStabilizationWindowSeconds=5),
        Settings(pulsar_admin_url=ADMIN),
    )
    assert so["spec"]["pollingInterval"] == 2
    assert so["spec"]["cooldownPeriod"] == 0  # zero is a value, not "unset"
    assert so["spec"]["advanced"] == {
        "horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}}}
    }
    # Unset: KEDA's and the HPA's defaults apply (and an unchanged model never rewrites the ScaledObject).
    so = builders.scaled_object(keda_local(), Settings(pulsar_admin_url=ADMIN))
    assert not {"pollingInterval", "cooldownPeriod", "advanced"} & set(so["spec"])


def test_threshold_is_a_string():
    so = builders.scaled_object(local(msgBacklogThreshold=15), Settings(pulsar_admin_url=ADMIN))
    value = so["spec"]["triggers"][0]["metadata"]["msgBacklogThreshold"]
    assert value == "15"
    assert isinstance(value, str)


def test_scaled_object_with_token_uses_trigger_authentication():
    settings = Settings(pulsar_admin_url=ADMIN, pulsar_token="secret-token")
    so = builders.scaled_object(keda_local(), settings)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["metadata"]["authModes"] == "bearer"
    assert trigger["authenticationRef"] == {"name": "ai-model-sample-pulsar-auth"}
    assert "secret-token" not in json.dumps(so)
    assert b64("secret-token") not in json.dumps(so)

    ta = builders.trigger_authentication(keda_local(), settings)
    assert ta["apiVersion"] == "keda.sh/v1alpha1"
    assert ta["kind"] == "TriggerAuthentication"
    assert ta["metadata"]["name"] == "ai-model-sample-pulsar-auth"
    assert ta["metadata"]["ownerReferences"] == [OWNER]
    assert ta["spec"] == {
        "secretTargetRef": [
            {"parameter": "bearerToken", "name": "ai-model-sample-worker-secrets", "key": "PULSAR_TOKEN"}
        ]
    }
    assert "secret-token" not in json.dumps(ta)


def test_scaled_object_without_token_has_no_auth():
    (trigger,) = builders.scaled_object(keda_local(), Settings(pulsar_admin_url=ADMIN))["spec"]["triggers"]
    assert "authModes" not in trigger["metadata"]
    assert "authenticationRef" not in trigger


# --- children() -----------------------------------------------------------------------------------------------------


def test_children_local():
    kids = builders.children(local(), Settings(), NO_KEDA)
    assert _kinds(kids) == BASE_CHILDREN
    assert kids[3] == builders.deployment(local(), Settings(), NO_KEDA)


def test_children_remote():
    kids = builders.children(remote(), Settings(), NO_KEDA)
    assert _kinds(kids) == SECRET_CHILDREN
    assert kids[3] == builders.secret(remote(), Settings())
    assert kids[4] == builders.deployment(remote(), Settings(), NO_KEDA)


def test_children_threshold_without_keda():
    for settings, caps in [(Settings(pulsar_admin_url=ADMIN), NO_KEDA), (Settings(), KEDA)]:
        assert _kinds(builders.children(keda_local(), settings, caps)) == BASE_CHILDREN


def test_children_autoscaled_without_token():
    settings = Settings(pulsar_admin_url=ADMIN)
    kids = builders.children(keda_local(), settings, KEDA)
    assert _kinds(kids) == [*BASE_CHILDREN, ("ScaledObject", "ai-model-sample-scaledobject")]
    assert "replicas" not in kids[3]["spec"]
    assert kids[4] == builders.scaled_object(keda_local(), settings)


def test_children_autoscaled_with_token():
    settings = Settings(pulsar_admin_url=ADMIN, pulsar_token="tok")
    kids = builders.children(keda_local(), settings, KEDA)
    assert _kinds(kids) == [
        *SECRET_CHILDREN,
        ("TriggerAuthentication", "ai-model-sample-pulsar-auth"),
        ("ScaledObject", "ai-model-sample-scaledobject"),
    ]
    assert kids[5] == builders.trigger_authentication(keda_local(), settings)
    # The TriggerAuthentication refers to the own Secret's token key, which exists.
    assert kids[3]["data"] == {"PULSAR_TOKEN": b64("tok")}
    assert "replicas" not in kids[4]["spec"]


# --- hashes and purity ----------------------------------------------------------------------------------------------


def _hash(manifest: dict) -> str:
    return manifest["metadata"]["annotations"][builders.ANNOTATION_HASH]


def test_content_hash_stable():
    a = builders.children(remote(), Settings(), NO_KEDA)
    b = builders.children(remote(), Settings(), NO_KEDA)
    assert [_hash(x) for x in a] == [_hash(x) for x in b]
    assert a == b
    assert builders.content_hash({"a": 1, "b": [1, 2]}) == builders.content_hash({"b": [1, 2], "a": 1})


def test_content_hash_ignores_model_status_and_resource_version():
    m = local()
    before = _hash(builders.deployment(m, Settings(), NO_KEDA))
    m["metadata"]["resourceVersion"] = "999"
    m["status"] = {"state": "Failed", "message": "x"}
    assert _hash(builders.deployment(m, Settings(), NO_KEDA)) == before


def test_content_hash_changes_with_spec():
    before = _hash(builders.deployment(local(), Settings(), NO_KEDA))
    assert _hash(builders.deployment(local(replicas=4), Settings(), NO_KEDA)) != before
    assert _hash(builders.deployment(local(image="user/image:v2"), Settings(), NO_KEDA)) != before
    assert _hash(builders.deployment(local(maxProcessNum=8), Settings(), NO_KEDA)) != before
    assert _hash(builders.deployment(local(), Settings(pulsar_url="pulsar://b:6650"), NO_KEDA)) != before
    so_before = _hash(builders.scaled_object(keda_local(), Settings(pulsar_admin_url=ADMIN)))
    so_after = _hash(builders.scaled_object(local(msgBacklogThreshold=3), Settings(pulsar_admin_url=ADMIN)))
    assert so_before != so_after


def test_secret_hash_annotation_follows_api_key():
    def secret_hash(m: dict, settings: Settings | None = None) -> str:
        dep = builders.deployment(m, settings or Settings(), NO_KEDA)
        return dep["spec"]["template"]["metadata"]["annotations"][builders.ANNOTATION_SECRET_HASH]

    before = secret_hash(remote())
    assert before == builders.content_hash({"API_KEY": b64("xxxxxxx")})
    assert secret_hash(remote()) == before
    # Nothing secret: the hash of the empty data, and a token changes it.
    assert secret_hash(local()) == builders.content_hash({})
    assert secret_hash(local(), Settings(pulsar_token="t")) == builders.content_hash({"PULSAR_TOKEN": b64("t")})
    assert secret_hash(local(), Settings(pulsar_token="t")) != secret_hash(local())
    assert secret_hash(remote(apiKey="yyyyyyy")) != before
    assert secret_hash(remote(), Settings(pulsar_token="t")) != before
    dep_a = builders.deployment(remote(), Settings(), NO_KEDA)
    dep_b = builders.deployment(remote(apiKey="yyyyyyy"), Settings(), NO_KEDA)
    assert _hash(dep_a) != _hash(dep_b)
    # Only the annotation differs in the pod template: the env itself holds no key.
    assert container(dep_a) == container(dep_b)


@pytest.mark.parametrize(
    "m,settings,caps",
    [
        (local(), Settings(), NO_KEDA),
        (remote(), Settings(pulsar_token="t"), NO_KEDA),
        (model({"type": "local", "model": "m", "image": "i", "msgBacklogThreshold": 1}), Settings("a", "b", "c"), KEDA),
        (
            model(
                {
                    "type": "remote",
                    "model": "m",
                    "image": "i",
                    "baseURL": "u",
                    "apiKeySecretRef": {"name": "s"},
                    "msgBacklogThreshold": 5,
                    "minReplicas": 0,
                }
            ),
            Settings(pulsar_admin_url=ADMIN, pulsar_token="t"),
            KEDA,
        ),
    ],
    ids=["local", "remote", "keda-defaults", "keda-secret-ref"],
)
def test_builders_are_pure(m, settings, caps):
    original = copy.deepcopy(m)
    kids = builders.children(m, settings, caps)
    if builders.wants_autoscaling(m):
        builders.scaled_object(m, settings)
        builders.trigger_authentication(m, settings)
    builders.spec_of(m)
    assert m == original
    # Manifests do not share mutable structure with the input either.
    kids_copy = copy.deepcopy(kids)
    m["spec"]["image"] = "changed"
    m["metadata"]["name"] = "changed"
    assert kids == kids_copy


def test_spec_of_fills_defaults():
    m = model({"type": "local", "model": "m", "image": "i"})
    assert builders.spec_of(m) == {"type": "local", "model": "m", "image": "i", "replicas": 1, "maxProcessNum": 128}
    assert builders.spec_of(local())["replicas"] == 3


def test_a_rotated_key_behind_api_key_secret_ref_rolls_the_workers():
    def pod_hash(ref_hash):
        dep = builders.deployment(local(), Settings(), NO_KEDA, ref_hash)
        return dep["spec"]["template"]["metadata"]["annotations"][builders.ANNOTATION_SECRET_HASH]

    # Without a reference: the hash the Deployments of existing models already carry.
    assert pod_hash(None) == builders.content_hash(builders.secret_data(local(), Settings()))
    assert pod_hash("aaaa") != pod_hash(None)
    assert pod_hash("aaaa") != pod_hash("bbbb")
    assert pod_hash("aaaa") == pod_hash("aaaa")
    # While the key is missing, the hash the pods were started with is kept, in the desired state
    # itself (so that the Deployment is not rewritten for nothing).
    kept = builders.deployment(local(), Settings(), NO_KEDA, None, started_hash="started")
    assert kept["spec"]["template"]["metadata"]["annotations"][builders.ANNOTATION_SECRET_HASH] == "started"


def test_answer_endpoints_reach_the_workers_only_when_configured():
    assert "ANSWER_ENDPOINTS" not in env_of(builders.deployment(remote(), Settings(), NO_KEDA))
    settings = Settings.from_env({"ANSWER_ENDPOINTS": "http://gw:8080/res,  ws://gw:8080/res/ws"})
    env = env_of(builders.deployment(remote(), settings, NO_KEDA))
    assert env["ANSWER_ENDPOINTS"] == {"name": "ANSWER_ENDPOINTS", "value": "http://gw:8080/res ws://gw:8080/res/ws"}


# -- a token per model (SPEC §9) ---------------------------------------------------------------

PER_MODEL = Settings(pulsar_admin_url=ADMIN, per_model_tokens=True)
TOKENS = builders.ModelTokens(worker="worker.jwt", stats="stats.jwt")


def test_per_model_secret_holds_the_models_two_tokens_and_never_the_operators():
    settings = Settings(pulsar_admin_url=ADMIN, pulsar_token="operator-token", per_model_tokens=True)
    data = builders.secret(local(), settings, TOKENS)["data"]
    assert data == {"PULSAR_TOKEN": b64("worker.jwt"), "PULSAR_STATS_TOKEN": b64("stats.jwt")}


def test_per_model_workers_read_their_token_from_a_mounted_file():
    dep = builders.deployment(local(), PER_MODEL, NO_KEDA)
    env = env_of(dep)
    assert env["PULSAR_TOKEN"] == {"name": "PULSAR_TOKEN", "value": "file:///var/run/secrets/aimodel/pulsar/token"}
    pod = dep["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "aimodel-pulsar-token")
    # Only the worker's token is in the file; KEDA's stats token stays in the Secret.
    assert volume["secret"]["secretName"] == OWN_SECRET
    assert volume["secret"]["items"] == [{"key": "PULSAR_TOKEN", "path": "token"}]
    mount = next(m for m in container(dep)["volumeMounts"] if m["name"] == "aimodel-pulsar-token")
    assert mount["mountPath"] == "/var/run/secrets/aimodel/pulsar" and mount["readOnly"] is True


def test_a_renewed_token_does_not_roll_the_workers():
    before = builders.deployment(local(), PER_MODEL, NO_KEDA)
    after = builders.deployment(local(), PER_MODEL, NO_KEDA)
    assert builders.secret(local(), PER_MODEL, TOKENS) != builders.secret(
        local(), PER_MODEL, builders.ModelTokens(worker="renewed.jwt", stats="renewed-stats.jwt")
    )
    assert before == after
    # An inline API key still rolls them when it changes.
    assert builders.deployment(remote(), PER_MODEL, NO_KEDA) != builders.deployment(
        remote(apiKey="other"), PER_MODEL, NO_KEDA
    )


def test_per_model_keda_reads_the_stats_token():
    kids = builders.children(keda_local(), PER_MODEL, KEDA, tokens=TOKENS)
    assert _kinds(kids) == [
        *SECRET_CHILDREN,
        ("TriggerAuthentication", "ai-model-sample-pulsar-auth"),
        ("ScaledObject", "ai-model-sample-scaledobject"),
    ]
    auth = kids[5]["spec"]["secretTargetRef"]
    assert {"parameter": "bearerToken", "name": OWN_SECRET, "key": "PULSAR_STATS_TOKEN"} in auth


def test_a_model_held_elsewhere_keeps_only_its_reporting_access():
    assert _kinds(builders.access_children(local())) == BASE_CHILDREN[:3]
