"""The Helm chart in charts/aimodel-operator, rendered by the real helm (built from its Go module
on first use) and checked as data against the kustomize config: same CRD bytes, same RBAC, same
manager container, and values.schema.json refusing wrong values with the field named. No cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aimodel_operator import crd

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "aimodel-operator"
NAMESPACE = "aimodel-operator-system"
RELEASE = "aimodel-operator"
PREFIX = "aimodel-operator-"


@pytest.fixture(scope="module")
def helm() -> str:
    from devcluster import helm as helm_tool

    return str(helm_tool.build())


def _helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def render(helm: str, *sets: str, release: str = RELEASE, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds"]
    for item in sets:
        args += ["--set", item]
    proc = _helm(helm, *args)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def _one(docs: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in docs
        if d["kind"] == kind and d["metadata"]["name"] == name and d["metadata"].get("namespace") == namespace
    ]
    assert len(found) == 1, f"{kind} {name}: {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def _config(path: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((REPO / path).read_text()) if doc]


def _manager(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(docs, "Deployment", f"{PREFIX}controller-manager", NAMESPACE)["spec"]["template"]["spec"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.fixture(scope="module")
def default(helm: str) -> list[dict[str, Any]]:
    return render(helm)


# -- one CRD, one set of rules ---------------------------------------------------------------


def test_chart_crd_is_the_same_bytes_as_the_generated_one():
    chart_crd = (CHART / "crds" / "model.youxam.com_aimodels.yaml").read_bytes()
    config_crd = (REPO / "config" / "crd" / "bases" / "model.youxam.com_aimodels.yaml").read_bytes()
    assert chart_crd == config_crd, "charts/…/crds is stale: run `make manifests`"
    assert chart_crd.decode() == crd.crd_yaml(), "the CRDs are stale: run `make manifests`"


def test_default_objects_carry_the_kustomize_names(default):
    assert sorted((d["kind"], d["metadata"]["name"]) for d in default) == sorted(
        [
            ("CustomResourceDefinition", "aimodels.model.youxam.com"),
            ("ServiceAccount", f"{PREFIX}controller-manager"),
            ("ClusterRole", f"{PREFIX}manager-role"),
            ("ClusterRoleBinding", f"{PREFIX}manager-rolebinding"),
            ("Role", f"{PREFIX}leader-election-role"),
            ("RoleBinding", f"{PREFIX}leader-election-rolebinding"),
            ("Deployment", f"{PREFIX}controller-manager"),
            ("PodDisruptionBudget", f"{PREFIX}controller-manager"),
            ("Service", f"{PREFIX}metrics"),
            ("ClusterRole", f"{PREFIX}metrics-auth-role"),
            ("ClusterRoleBinding", f"{PREFIX}metrics-auth-rolebinding"),
            ("ClusterRole", f"{PREFIX}metrics-reader"),
            ("NetworkPolicy", f"{PREFIX}controller-manager"),
            ("ValidatingAdmissionPolicy", f"{PREFIX}fence"),
            ("ValidatingAdmissionPolicyBinding", f"{PREFIX}fence"),
        ]
    )
    for doc in default:
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
            assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_cluster_role_rules_equal_config_rbac(default):
    [config_role] = _config("config/rbac/role.yaml")
    assert _one(default, "ClusterRole", f"{PREFIX}manager-role")["rules"] == config_role["rules"]
    [config_leader] = _config("config/rbac/leader_election_role.yaml")
    assert _one(default, "Role", f"{PREFIX}leader-election-role", NAMESPACE)["rules"] == config_leader["rules"]


def test_bindings_equal_config_rbac(default):
    subject = [{"kind": "ServiceAccount", "name": f"{PREFIX}controller-manager", "namespace": NAMESPACE}]
    binding = _one(default, "ClusterRoleBinding", f"{PREFIX}manager-rolebinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": f"{PREFIX}manager-role",
    }
    assert binding["subjects"] == subject
    leader = _one(default, "RoleBinding", f"{PREFIX}leader-election-rolebinding", NAMESPACE)
    assert leader["roleRef"]["name"] == f"{PREFIX}leader-election-role"
    assert leader["subjects"] == subject


CLUSTER_SCOPED = (
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)
OPERATOR_USER = "system:serviceaccount:aimodel-operator-system:aimodel-operator-controller-manager"


def test_metrics_rbac_equals_config_rbac(default):
    for name in ("metrics-auth-role", "metrics-reader"):
        [config_role] = _config(f"config/rbac/{name.removesuffix('-role')}_role.yaml".replace("-", "_"))
        assert _one(default, "ClusterRole", f"{PREFIX}{name}")["rules"] == config_role["rules"]
    binding = _one(default, "ClusterRoleBinding", f"{PREFIX}metrics-auth-rolebinding")
    assert binding["roleRef"]["name"] == f"{PREFIX}metrics-auth-role"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{PREFIX}controller-manager", "namespace": NAMESPACE}
    ]


def test_metrics_are_secure_by_default_and_the_scraper_is_told_how(helm, default):
    [container] = _manager(default)["containers"]
    assert "--metrics-secure" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--metrics-cert-dir")], "self-signed by default"
    policy = _one(default, "NetworkPolicy", f"{PREFIX}controller-manager", NAMESPACE)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {
            "ports": [{"port": "metrics", "protocol": "TCP"}],
            "from": [{"namespaceSelector": {"matchLabels": {"metrics": "enabled"}}}],
        }
    ]
    docs = render(helm, "metrics.serviceMonitor.enabled=true", "metrics.certSecret=metrics-tls")
    spec = _manager(docs)
    [container] = spec["containers"]
    assert "--metrics-cert-dir=/etc/aimodel-operator/metrics-certs" in container["args"]
    assert {"name": "metrics-certs", "secret": {"secretName": "metrics-tls"}} in spec["volumes"]
    [endpoint] = _one(docs, "ServiceMonitor", f"{PREFIX}metrics", NAMESPACE)["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    plain = render(helm, "metrics.secure=false", "networkPolicy.enabled=false", "metrics.serviceMonitor.enabled=true")
    [container] = _manager(plain)["containers"]
    assert "--metrics-secure" not in container["args"]
    assert not [d for d in plain if d["kind"] == "NetworkPolicy" or "metrics-auth" in d["metadata"]["name"]]
    [endpoint] = _one(plain, "ServiceMonitor", f"{PREFIX}metrics", NAMESPACE)["spec"]["endpoints"]
    assert "scheme" not in endpoint


def test_the_image_can_be_pinned_by_digest(helm, default):
    [container] = _manager(default)["containers"]
    assert container["image"] == "aimodel-operator:0.1.0"
    digest = "sha256:" + "ab" * 32
    [container] = _manager(render(helm, f"image.digest={digest}", "image.tag=ignored"))["containers"]
    assert container["image"] == f"aimodel-operator@{digest}"


def test_admission_policy_equals_config_policy(default):
    config_policy, config_binding = _config("config/policy/fence.yaml")
    policy = _one(default, "ValidatingAdmissionPolicy", f"{PREFIX}fence")
    assert policy["spec"] == config_policy["spec"]
    [condition] = policy["spec"]["matchConditions"]
    assert condition["expression"] == f"request.userInfo.username == '{OPERATOR_USER}'"
    binding = _one(default, "ValidatingAdmissionPolicyBinding", f"{PREFIX}fence")
    assert binding["spec"] == {**config_binding["spec"], "policyName": f"{PREFIX}fence"}


def test_admission_policy_names_the_release_service_account_and_can_be_turned_off(helm):
    docs = render(helm, "serviceAccount.name=op", release="ai", namespace="ops")
    [policy] = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    assert policy["metadata"]["name"] == "ai-aimodel-operator-fence"
    assert policy["spec"]["matchConditions"][0]["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:ops:op'"
    )
    off = render(helm, "admissionPolicy.enabled=false")
    assert not [d for d in off if d["kind"].startswith("ValidatingAdmissionPolicy")]
    # Clusters older than 1.30 do not serve the API: nothing is rendered there.
    old = _helm(helm, "template", RELEASE, str(CHART), "--kube-version", "1.29.0")
    assert old.returncode == 0, old.stderr
    assert "ValidatingAdmissionPolicy" not in old.stdout


def test_scoped_rbac_equals_config_scoped(helm):
    docs = render(helm, "watchNamespaces={team-a,team-b}")
    # No cluster-wide grant of the manager's rules; the metrics-auth binding reads nothing.
    assert [d["roleRef"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"] == [f"{PREFIX}metrics-auth-role"]
    for config_binding in _config("config/scoped/role_bindings.yaml"):
        ns = config_binding["metadata"]["namespace"]
        binding = _one(docs, "RoleBinding", config_binding["metadata"]["name"], ns)
        assert binding["roleRef"] == config_binding["roleRef"]
        assert binding["subjects"] == config_binding["subjects"]
    assert sorted(d["metadata"].get("namespace") for d in docs if d["kind"] == "RoleBinding") == [
        NAMESPACE,
        "team-a",
        "team-b",
    ]
    [container] = _manager(docs)["containers"]
    assert _env(container)["WATCH_NAMESPACES"] == "team-a,team-b"


def test_manager_container_matches_config_manager(default):
    [config_deploy] = [d for d in _config("config/manager/manager.yaml") if d["kind"] == "Deployment"]
    config_pod = config_deploy["spec"]["template"]["spec"]
    pod = _manager(default)
    assert pod["securityContext"] == config_pod["securityContext"]
    assert pod["terminationGracePeriodSeconds"] == config_pod["terminationGracePeriodSeconds"]
    assert pod["serviceAccountName"] == f"{PREFIX}controller-manager"
    assert pod["volumes"] == config_pod["volumes"]
    [ours], [theirs] = pod["containers"], config_pod["containers"]
    for field in ("securityContext", "resources", "volumeMounts", "ports"):
        assert ours[field] == theirs[field], field
    for probe in ("livenessProbe", "readinessProbe"):
        assert ours[probe]["httpGet"]["path"] == theirs[probe]["httpGet"]["path"]
    assert ours["image"] == "aimodel-operator:0.1.0"
    assert ours["args"][:2] == ["run", "--leader-elect"]
    assert "--log-format=json" in ours["args"] and "--bind-address=0.0.0.0" in ours["args"]
    env = _env(ours)
    theirs_env = _env(theirs)
    for name in ("POD_NAME", "POD_NAMESPACE", "PULSAR_URL", "RES_TOPIC_NAME", "PULSAR_ADMIN_URL"):
        assert env[name] == theirs_env[name], name
    assert "PULSAR_TOKEN" not in env, "no token Secret named: no PULSAR_TOKEN"
    assert "WATCH_NAMESPACES" not in env
    assert "ANSWER_ENDPOINTS" not in env, "none configured: the workers' own default"


def test_replicas_leader_election_and_pdb(default, helm):
    deploy = _one(default, "Deployment", f"{PREFIX}controller-manager", NAMESPACE)
    assert deploy["spec"]["replicas"] == 2
    pdb = _one(default, "PodDisruptionBudget", f"{PREFIX}controller-manager", NAMESPACE)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()

    single = render(helm, "replicaCount=1", "leaderElection.enabled=false")
    assert not [d for d in single if d["kind"] in ("PodDisruptionBudget", "Role")], "one replica: no PDB, no Lease Role"
    [container] = _manager(single)["containers"]
    assert "--leader-elect" not in container["args"]


def test_operator_settings_reach_the_container(helm):
    docs = render(
        helm,
        "pulsar.url=pulsar+ssl://broker.pulsar:6651",
        "pulsar.adminURL=https://broker.pulsar:8443",
        "pulsar.resultTopic=results",
        "pulsar.tokenSecret.name=pulsar-credentials",
        "logFormat=plain",
        "workers=4",
        "image.repository=registry.example/aimodel-operator",
        "image.tag=1.2.3",
        "nodeSelector.pool=system",
        "tolerations[0].key=dedicated,tolerations[0].operator=Exists,tolerations[0].effect=NoSchedule",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "resources.limits.memory=512Mi",
        "answerEndpoints={http://gw.uplion:8080/res,ws://gw.uplion:8080/res/ws}",
    )
    pod = _manager(docs)
    [container] = pod["containers"]
    env = _env(container)
    assert env["PULSAR_URL"] == "pulsar+ssl://broker.pulsar:6651"
    assert env["PULSAR_ADMIN_URL"] == "https://broker.pulsar:8443"
    assert env["RES_TOPIC_NAME"] == "results"
    assert env["ANSWER_ENDPOINTS"] == "http://gw.uplion:8080/res ws://gw.uplion:8080/res/ws"
    assert env["PULSAR_TOKEN"] == {"secretKeyRef": {"name": "pulsar-credentials", "key": "token", "optional": False}}
    assert "--log-format=plain" in container["args"] and "--workers=4" in container["args"]
    assert container["image"] == "registry.example/aimodel-operator:1.2.3"
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["affinity"]["nodeAffinity"]
    assert container["resources"]["limits"]["memory"] == "512Mi"


def test_service_monitor_scrapes_the_metrics_service(helm):
    docs = render(helm, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")
    monitor = _one(docs, "ServiceMonitor", f"{PREFIX}metrics", NAMESPACE)
    service = _one(docs, "Service", f"{PREFIX}metrics", NAMESPACE)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert (
        service["spec"]["selector"]
        == _one(docs, "Deployment", f"{PREFIX}controller-manager", NAMESPACE)["spec"]["selector"]["matchLabels"]
    )
    assert not [d for d in render(helm) if d["kind"] == "ServiceMonitor"], "off by default"


def test_another_release_name_prefixes_every_name(helm):
    docs = render(helm, release="ai", namespace="ops")
    names = {d["metadata"]["name"] for d in docs if d["kind"] != "CustomResourceDefinition"}
    assert all(name.startswith("ai-aimodel-operator-") for name in names), names
    binding = _one(docs, "ClusterRoleBinding", "ai-aimodel-operator-manager-rolebinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ai-aimodel-operator-controller-manager", "namespace": "ops"}
    ]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        (["pulsar.token=s3cret"], "token"),
        (["replicaCount=3", "leaderElection.enabled=false"], "replicaCount"),
        (["logFormat=xml"], "logFormat"),
        (["pulsar.url=http://broker:6650"], "url"),
        (["watchNamespaces={Team_A}"], "watchNamespaces"),
        (["image.pullPolicy=Sometimes"], "pullPolicy"),
        (["metrics.port=8081"], "port"),
        (["imagez.tag=x"], "imagez"),
        (["image.digest=latest"], "digest"),
        (["resources.limits.memory=lots"], "memory"),
        (["workers=0"], "workers"),
        (["answerEndpoints={gw.uplion:8080}"], "answerEndpoints"),
        (["answerEndpoints={http://user:pw@gw/res}"], "answerEndpoints"),
        (["pulsar.tenancy.tokenTTLSeconds=10"], "tokenTTLSeconds"),
        (["pulsar.tenancy.secretName=Not_A_Name"], "secretName"),
    ],
)
def test_schema_refuses_wrong_values_naming_the_field(helm, values, field):
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for item in values:
        args += ["--set", item]
    proc = _helm(helm, *args)
    assert proc.returncode != 0, f"{values} was accepted"
    assert "schema" in proc.stderr.lower() and field in proc.stderr, proc.stderr


def test_a_token_per_model_mounts_the_signing_key_and_passes_the_admin_token_by_reference(helm):
    docs = render(
        helm,
        "pulsar.adminURL=https://broker.pulsar:8443",
        "pulsar.tenancy.secretName=pulsar-tenancy",
        "pulsar.tenancy.tokenTTLSeconds=3600",
    )
    pod = _manager(docs)
    [container] = pod["containers"]
    env = _env(container)
    assert env["PULSAR_ADMIN_TOKEN"] == {"secretKeyRef": {"name": "pulsar-tenancy", "key": "admin-token"}}
    assert env["PULSAR_TOKEN_SIGNING_KEY_FILE"] == "/etc/aimodel-operator/pulsar-signing-key/signing-key"
    assert env["PULSAR_TOKEN_TTL_SECONDS"] == "3600"
    assert env["PULSAR_GRANT_COLLECT_SECONDS"] == "300"
    volume = next(v for v in pod["volumes"] if v["name"] == "pulsar-signing-key")
    assert volume["secret"] == {
        "secretName": "pulsar-tenancy",
        "items": [{"key": "signing-key", "path": "signing-key"}],
    }
    mount = next(m for m in container["volumeMounts"] if m["name"] == "pulsar-signing-key")
    assert mount["mountPath"] == "/etc/aimodel-operator/pulsar-signing-key" and mount["readOnly"] is True
    # The single-token mode has neither.
    [plain] = _manager(render(helm))["containers"]
    assert "PULSAR_ADMIN_TOKEN" not in _env(plain)
    assert all(m["name"] != "pulsar-signing-key" for m in plain["volumeMounts"])


def test_a_token_per_model_without_the_admin_url_is_refused_saying_why(helm):
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set", "pulsar.tenancy.secretName=t"]
    proc = _helm(helm, *args)
    assert proc.returncode != 0
    assert "pulsar.tenancy.secretName needs pulsar.adminURL" in proc.stderr, proc.stderr


def test_no_plain_token_anywhere_in_a_release(helm):
    docs = render(helm, "pulsar.tokenSecret.name=pulsar-credentials")
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart never carries a Secret"
    text = yaml.safe_dump_all(docs)
    assert "PULSAR_TOKEN" in text and "secretKeyRef" in text


def test_helm_lint_is_clean(helm):
    for extra in ((), ("--set", "watchNamespaces={a,b}"), ("--set", "metrics.serviceMonitor.enabled=true")):
        proc = _helm(helm, "lint", "--strict", str(CHART), *extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
