"""Fixtures: one real cluster per test session, one namespace per test.

With AIMODEL_TEST_KUBECONFIG pointing at a kubeconfig, that cluster is used
as it is. Otherwise the local cluster (hack/devcluster) is started in
.devcluster-test/ for the session and stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kube_helpers import REPO, Kubectl, OperatorProcess, ServedModel, drop_namespace, established, wait_for

TEST_CLUSTER_DIR = REPO / ".devcluster-test"


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster():
    """(kubeconfig path, local Cluster or None)."""
    given = os.environ.get("AIMODEL_TEST_KUBECONFIG")
    if given:
        yield Path(given), None
        return
    from devcluster.cluster import Cluster

    local = Cluster(TEST_CLUSTER_DIR)
    local.up()
    try:
        yield local.kubeconfig, local
    finally:
        local.down()


@pytest.fixture(scope="session")
def kubeconfig(cluster) -> Path:
    return cluster[0]


@pytest.fixture(scope="session")
def kubectl(kubeconfig) -> Kubectl:
    from devcluster import kubernetes

    binary = kubernetes.kubectl_path()
    return Kubectl(str(binary) if binary.exists() else "kubectl", kubeconfig)


@pytest.fixture
def namespace(kubectl, request) -> str:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    name = "".join(c for c in name if c.isalnum() or c == "-")
    kubectl("create", "namespace", name)
    wait_for(
        "the namespace's default ServiceAccount", lambda: kubectl.in_namespace(name).get("serviceaccount", "default")
    )
    yield name
    drop_namespace(kubectl, name)


@pytest.fixture
def k(kubectl, namespace) -> Kubectl:
    """kubectl bound to the test's namespace."""
    return kubectl.in_namespace(namespace)


@pytest.fixture(scope="session")
def crds_installed(kubectl):
    kubectl("apply", "--server-side", "-f", str(REPO / "config" / "crd" / "bases"))
    established(kubectl, "aimodels.model.youxam.com")
    return True


SUITE_NS = "aimodel-operator-suite"
SUITE_SA = "operator"
FENCE_REFUSAL = "the aimodel-operator may write only its own children"


def _fence_for(user: str, name: str) -> list[dict]:
    """config/policy's policy and binding, named ``name`` and matching ``user``."""
    import yaml

    policy, binding = yaml.safe_load_all((REPO / "config" / "policy" / "fence.yaml").read_text())
    [condition] = policy["spec"]["matchConditions"]
    shipped = "system:serviceaccount:aimodel-operator-system:aimodel-operator-controller-manager"
    assert shipped in condition["expression"], condition
    condition["expression"] = condition["expression"].replace(shipped, user)
    policy["metadata"]["name"] = binding["metadata"]["name"] = binding["spec"]["policyName"] = name
    return [policy, binding]


@pytest.fixture(scope="session")
def operator_identity(kubectl, crds_installed, tmp_path_factory) -> tuple[Path, str]:
    """Who the session's operator is, as a deployed one is: a ServiceAccount with exactly the rules
    of config/rbac's ClusterRoles (the manager's and metrics-auth), fenced by config/policy's
    ValidatingAdmissionPolicy matched to this ServiceAccount. So every test it runs in also proves
    that the operator needs no more than its RBAC and never writes what the fence refuses.
    (kubeconfig, token)."""
    import yaml

    [role] = yaml.safe_load_all((REPO / "config" / "rbac" / "role.yaml").read_text())
    [metrics_auth] = yaml.safe_load_all((REPO / "config" / "rbac" / "metrics_auth_role.yaml").read_text())
    role["metadata"] = {"name": f"{SUITE_NS}-role"}
    role["rules"] += metrics_auth["rules"]
    user = f"system:serviceaccount:{SUITE_NS}:{SUITE_SA}"
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SUITE_NS}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SUITE_SA, "namespace": SUITE_NS}},
        role,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{SUITE_NS}-rolebinding"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role["metadata"]["name"],
            },
            "subjects": [{"kind": "ServiceAccount", "name": SUITE_SA, "namespace": SUITE_NS}],
        },
        *_fence_for(user, f"{SUITE_NS}-fence"),
    ]
    kubectl(
        "apply", "--server-side", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )
    token = kubectl.in_namespace(SUITE_NS).create_token(SUITE_SA, duration="12h")
    probe = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "fence-probe", "namespace": SUITE_NS},
        "stringData": {"k": "v"},
    }

    def fenced() -> bool:
        res = kubectl.run("create", "--dry-run=server", "-f", "-", input=json.dumps(probe), token=token, check=False)
        assert res.returncode != 0, "the fence lets the operator create a Secret that is not its own"
        return FENCE_REFUSAL in res.stderr

    # A new policy takes effect once the API server has compiled it (typically within a second).
    wait_for("the fence in force for the suite's operator", lambda: _quiet(fenced), timeout=30)
    anon = json.loads(kubectl._token_kubeconfig().read_text())
    anon["users"] = [{"name": "token", "user": {"token": token}}]
    path = tmp_path_factory.mktemp("identity") / "operator.kubeconfig"
    path.write_text(json.dumps(anon))
    yield path, token
    if os.environ.get("AIMODEL_TEST_KUBECONFIG"):
        for obj in reversed(objects):
            kubectl("delete", obj["kind"], obj["metadata"]["name"], "--ignore-not-found", "--wait=false")


def _quiet(check):
    """``check()``, with an AssertionError taken as "not yet" (a policy not compiled yet admits all)."""
    try:
        return check()
    except AssertionError:
        return False


@pytest.fixture(scope="session")
def operator_process(operator_identity, crds_installed, tmp_path_factory):
    """The operator, running for the whole session with default settings, as its own fenced ServiceAccount."""
    proc = OperatorProcess(operator_identity[0], tmp_path_factory.mktemp("operator"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def operator(operator_process):
    """The session's operator, back to default settings and running when the test starts."""
    if operator_process.proc is None or operator_process.env:
        operator_process.stop()
        operator_process.start()
    return operator_process


@pytest.fixture
def keda(cluster):
    """The real KEDA (operator and metrics adapter) and its CRDs on the test cluster (built on first use)."""
    _, local = cluster
    if local is None:
        return True
    if not local.keda_running():
        local.start_keda()
    return True


@pytest.fixture(scope="session")
def pulsar(cluster) -> str:
    """Apache Pulsar standalone next to the test cluster; its admin URL."""
    _, local = cluster
    if local is None:
        url = os.environ.get("AIMODEL_TEST_PULSAR_ADMIN_URL")
        if not url:
            pytest.skip("an external cluster needs AIMODEL_TEST_PULSAR_ADMIN_URL for the Pulsar tests")
        return url
    return local.start_pulsar()


@pytest.fixture
def recorded_operator(crds_installed, operator_process, operator_identity, kubeconfig, tmp_path):
    """Starts the operator alone (the session's one stopped) behind a recording proxy, so that a test
    can count its requests: ``recorded_operator(env)`` returns (OperatorProcess, FaultProxy)."""
    from faults.faultproxy import FaultProxy

    with contextlib.ExitStack() as stack:

        def start(env: dict[str, str] | None = None) -> tuple[OperatorProcess, FaultProxy]:
            operator_process.stop()
            proxy = stack.enter_context(FaultProxy(kubeconfig))
            op = OperatorProcess(proxy.kubeconfig_path(tmp_path, token=operator_identity[1]), tmp_path)
            stack.callback(op.stop)  # before the proxy closes
            op.start(env or {})
            return op, proxy

        yield start


@pytest.fixture(scope="session")
def pulsar_token(cluster, pulsar) -> str:
    """The test Pulsar's superuser token (it refuses anonymous clients)."""
    return _pulsar_fact(cluster, "pulsar_admin_token", "AIMODEL_TEST_PULSAR_TOKEN", "a Pulsar superuser token")


@pytest.fixture(scope="session")
def pulsar_signing_key(cluster, pulsar) -> str:
    """The file of the test Pulsar's token signing key (for an operator that signs a token per model)."""
    return _pulsar_fact(cluster, "pulsar_token_key", "AIMODEL_TEST_PULSAR_TOKEN_KEY", "its token signing key file")


@pytest.fixture(scope="session")
def broker(cluster, pulsar) -> str:
    """The Pulsar broker URL (pulsar://) of the test cluster's Pulsar."""
    return _pulsar_fact(cluster, "pulsar_url", "AIMODEL_TEST_PULSAR_URL", "the broker's pulsar:// URL")


def _pulsar_fact(cluster, fact: str, env: str, what: str) -> str:
    """A fact of the local cluster's Pulsar, else ``env`` for an external cluster, else a skip naming both."""
    _, local = cluster
    value = local.fact(fact) if local is not None else os.environ.get(env, "")
    if not value:
        pytest.skip(f"an external cluster needs {env} ({what})")
    return str(value)


@pytest.fixture(scope="session")
def upstream():
    """The stand-in OpenAI-style API (models are added by the tests that use them)."""
    from standins.openai_api import OpenAIStandIn

    with OpenAIStandIn(models=()) as api:
        yield api


@pytest.fixture
def healthy_upstream(upstream):
    """The stand-in upstream, answering normally again after the test."""
    yield upstream
    upstream.mode = "ok"
    upstream.delay = 0.0
    upstream.loading = False


@pytest.fixture(scope="session")
def gateway():
    """The stand-in API gateway endpoints the workers answer to."""
    from standins.endpoint import EndpointStandIn

    with EndpointStandIn() as endpoint:
        yield endpoint


@pytest.fixture
def send_requests(broker, pulsar_token):
    """``send_requests(topic, messages)``: queue request messages as the gateway does."""
    from devcluster import pulsar as pulsar_mod

    client = pulsar_mod.client(broker, pulsar_token)

    def send(topic: str, messages: list[dict]) -> None:
        producer = client.create_producer(topic)
        for message in messages:
            producer.send(json.dumps(message).encode())
        producer.close()

    yield send
    client.close()


RES_TOPIC = "res-topic"


@pytest.fixture
def served_operator(operator_process, pulsar, broker, pulsar_token, pulsar_signing_key, gateway):
    """The operator giving workers the test Pulsar's URL and a token of their model's own (it signs
    and grants them with the admin token: the per-model mode) and the stand-in gateway as their one
    answer endpoint (restored by the ``operator`` fixture later)."""
    operator_process.stop()
    operator_process.start(
        {
            "PULSAR_URL": broker,
            "PULSAR_ADMIN_URL": pulsar,
            "PULSAR_ADMIN_TOKEN": pulsar_token,
            "PULSAR_TOKEN_SIGNING_KEY_FILE": pulsar_signing_key,
            "RES_TOPIC_NAME": RES_TOPIC,
            "ANSWER_ENDPOINTS": gateway.url,
        }
    )
    return operator_process


@pytest.fixture
def served_model(served_operator, k, namespace, healthy_upstream, kubectl, kubeconfig, tmp_path):
    """A remote AIModel served by the stand-in upstream; ``model.start()`` runs one of its workers."""
    upstream = healthy_upstream
    model = ServedModel("chat", f"gpt-4o-{uuid.uuid4().hex[:6]}", k, kubectl, kubeconfig, namespace, tmp_path)
    upstream.models.add(model.model_name)
    model.apply(
        {
            "type": "remote",
            "model": model.model_name,
            "baseURL": upstream.url,
            "apiKey": upstream.api_key,
            "image": "user/image:tag",
            "maxProcessNum": 8,
        }
    )
    yield model
    model.stop()
