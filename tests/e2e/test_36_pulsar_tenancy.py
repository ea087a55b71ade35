"""Tenants in the data plane, on the real Pulsar with token authentication and authorization:
a token per model granted only its own topics, a model name held by one namespace, renewal
without restarts, grants collected when their model is gone, what it costs the Pulsar admin.
The admin API failing is a fault case: tests/faults/test_70_pulsar_admin.py."""

from __future__ import annotations

import base64
import threading
import time
import urllib.error
import uuid

import pytest

from devcluster import pulsar as pulsar_mod
from kube_helpers import ServedModel, drop_namespace, wait_for

RES_TOPIC = "res-topic"
TTL = 30  # seconds: renewed with 10 s left, so every 20 s


def tenant_env(pulsar: str, broker: str, token: str, pulsar_signing_key: str, gateway_url: str, **extra: str) -> dict:
    return {
        "PULSAR_ADMIN_URL": pulsar,
        "PULSAR_URL": broker,
        "PULSAR_ADMIN_TOKEN": token,
        "PULSAR_TOKEN_SIGNING_KEY_FILE": pulsar_signing_key,
        "PULSAR_TOKEN_TTL_SECONDS": str(TTL),
        "PULSAR_GRANT_COLLECT_SECONDS": "2",
        "RES_TOPIC_NAME": RES_TOPIC,
        "ANSWER_ENDPOINTS": gateway_url,
        **extra,
    }


@pytest.fixture
def tenant_operator(operator_process, pulsar, broker, pulsar_token, pulsar_signing_key, gateway):
    operator_process.stop()
    operator_process.start(tenant_env(pulsar, broker, pulsar_token, pulsar_signing_key, gateway.url))
    return operator_process


@pytest.fixture
def other_namespace(kubectl):
    name = f"t-other-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    wait_for("its default ServiceAccount", lambda: kubectl.in_namespace(name).get("serviceaccount", "default"))
    yield name
    drop_namespace(kubectl, name)


def remote(model: ServedModel, upstream) -> dict:
    return {
        "type": "remote",
        "model": model.model_name,
        "baseURL": upstream.url,
        "apiKey": upstream.api_key,
        "image": "user/image:tag",
        "maxProcessNum": 4,
    }


@pytest.fixture
def tenant_model(tenant_operator, k, namespace, healthy_upstream, kubectl, kubeconfig, tmp_path):
    model = ServedModel("chat", f"gpt-4o-{uuid.uuid4().hex[:6]}", k, kubectl, kubeconfig, namespace, tmp_path)
    healthy_upstream.models.add(model.model_name)
    model.apply(remote(model, healthy_upstream))
    wait_for("its Secret", lambda: k.get("secret", "chat-worker-secrets"))
    yield model
    model.stop()


def secret_token(k, name: str = "chat", key: str = "PULSAR_TOKEN") -> str:
    data = (k.get("secret", f"{name}-worker-secrets") or {}).get("data") or {}
    return base64.b64decode(data[key]).decode() if key in data else ""


def ready(k, name: str = "chat") -> dict:
    status = (k.get("aimodel", name) or {}).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})


def refused(action) -> bool:
    """True when Pulsar refuses ``action`` (an authorization error, or for an anonymous client
    the operation timing out: the broker never answers it)."""
    import pulsar

    try:
        action()
    except (pulsar.AuthorizationError, pulsar.AuthenticationError, pulsar.Timeout, pulsar.ConnectError):
        return True
    return False


def quick_client(broker: str, token: str | None):
    import pulsar

    auth = pulsar.AuthenticationToken(token) if token else None
    return pulsar.Client(
        broker,
        authentication=auth,
        operation_timeout_seconds=5,
        logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
    )


def test_a_models_token_opens_its_own_topics_only(tenant_model, k, broker, pulsar, pulsar_token, send_requests):
    other = f"model-other-{uuid.uuid4().hex[:6]}"
    send_requests(f"persistent://public/default/{other}", [])  # another model's topic exists
    token = secret_token(k)
    assert token and token != pulsar_token
    anonymous = quick_client(broker, None)
    try:
        assert refused(lambda: anonymous.subscribe(tenant_model.topic, tenant_model.subscription))
    finally:
        anonymous.close()
    client = quick_client(broker, token)
    try:
        shared = __import__("pulsar").ConsumerType.Shared
        client.subscribe(tenant_model.topic, tenant_model.subscription, consumer_type=shared).close()
        client.create_producer(RES_TOPIC).close()
        assert refused(lambda: client.subscribe(f"persistent://public/default/{other}", "steal"))
        assert refused(lambda: client.subscribe("persistent://public/default/model-anything", "steal"))
        assert refused(lambda: client.create_producer(tenant_model.topic))  # consume only
    finally:
        client.close()
    # KEDA's token reads the stats of its topic and no other.
    stats = secret_token(k, key="PULSAR_STATS_TOKEN")
    assert pulsar_mod.stats(pulsar, stats, tenant_model.rest_topic)["subscriptions"]
    with pytest.raises(urllib.error.HTTPError, match=r"401|403"):
        pulsar_mod.stats(pulsar, stats, f"persistent/public/default/{other}")
    # The Deployment carries no token, only the path of the file its pods mount.
    deployment = k.get("deployment", "chat-deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PULSAR_TOKEN"]["value"].startswith("file:///var/run/secrets/aimodel/pulsar/")
    assert token not in str(deployment)


def test_requests_flow_with_the_models_own_token_across_renewals_without_restarts(
    tenant_model, k, namespace, kubectl, gateway, send_requests, tmp_path
):
    from standins.kubelet import sync_secret_volumes

    worker = tenant_model.start()
    generation = k.get("deployment", "chat-deployment")["metadata"]["generation"]
    first = secret_token(k)
    stop = threading.Event()

    def kubelet() -> None:  # a kubelet keeps mounted Secrets current (here: every second)
        while not stop.wait(1.0):
            sync_secret_volumes(kubectl, namespace, "chat", tmp_path)

    syncer = threading.Thread(target=kubelet, daemon=True)
    syncer.start()
    try:
        answered = 0
        deadline = time.monotonic() + TTL * 1.6  # past the first token's expiry
        while time.monotonic() < deadline:
            rid, msg = gateway.request(tenant_model.model_name, f"hello {answered}")
            send_requests(tenant_model.topic, [msg])
            assert gateway.answer(rid, timeout=30)["data"]["object"] == "chat.completion"
            answered += 1
            time.sleep(0.5)  # a request every half second, as traffic comes
    finally:
        stop.set()
        syncer.join()
    assert secret_token(k) != first, "the token was not renewed"
    assert worker.proc.poll() is None, worker.log_tail()
    assert "AuthenticationError" not in worker.log.read_text(), "the broker refused a token"
    assert k.get("deployment", "chat-deployment")["metadata"]["generation"] == generation, "the workers were rolled"
    assert answered >= TTL


def test_a_model_name_belongs_to_the_first_namespace(
    tenant_model,
    k,
    kubectl,
    kubeconfig,
    other_namespace,
    upstream,
    gateway,
    send_requests,
    pulsar,
    pulsar_token,
    tmp_path,
):
    k2 = kubectl.in_namespace(other_namespace)
    thief = ServedModel("chat", tenant_model.model_name, k2, kubectl, kubeconfig, other_namespace, tmp_path / "b")
    thief.apply(remote(thief, upstream))
    cond = wait_for("ModelNameInUse", lambda: ready(k2).get("reason") == "ModelNameInUse" and ready(k2))
    assert cond["status"] == "False" and k.namespace in cond["message"]
    assert k2.get("deployment", "chat-deployment") is None and k2.get("secret", "chat-worker-secrets") is None

    tenant_model.start()
    ids = []
    for i in range(5):
        rid, msg = gateway.request(tenant_model.model_name, f"for the holder {i}")
        ids.append(rid)
        send_requests(tenant_model.topic, [msg])
    for rid in ids:
        assert gateway.answer(rid, timeout=30)
    consumers = pulsar_mod.stats(pulsar, pulsar_token, tenant_model.rest_topic)["subscriptions"][
        tenant_model.subscription
    ]["consumers"]
    assert len(consumers) == 1  # the holder's worker, nothing of the other namespace
    tenant_model.stop()

    started = time.monotonic()
    k("delete", "aimodel", "chat")
    wait_for("the other namespace takes over", lambda: k2.get("deployment", "chat-deployment"), timeout=20)
    assert time.monotonic() - started < 10
    assert ready(k2).get("reason") != "ModelNameInUse"
    assert secret_token(k2)
    thief.start()
    rid, msg = gateway.request(thief.model_name, "for the new holder")
    send_requests(thief.topic, [msg])
    assert gateway.answer(rid, timeout=30)
    thief.stop()


def test_a_deleted_models_grants_are_revoked_and_foreign_grants_survive(tenant_model, k, pulsar, pulsar_token):
    import json
    import urllib.request

    def permissions() -> dict:
        req = urllib.request.Request(
            f"{pulsar}/admin/v2/{tenant_model.rest_topic}/permissions",
            headers={"Authorization": f"Bearer {pulsar_token}"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    ours = f"aimodel:{k.namespace}:chat"
    assert permissions()[ours] == ["consume"]
    foreign = urllib.request.Request(
        f"{pulsar}/admin/v2/{tenant_model.rest_topic}/permissions/someone-else",
        data=b'["consume"]',
        method="POST",
        headers={"Authorization": f"Bearer {pulsar_token}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(foreign, timeout=10).close()
    k("delete", "aimodel", "chat")
    wait_for("our grants revoked", lambda: not any(r.startswith("aimodel") for r in permissions()), timeout=30)
    assert permissions()["someone-else"] == ["consume"]


def admin_requests(operator) -> dict[str, float]:
    """The operator's Pulsar admin requests so far, by HTTP method."""
    out: dict[str, float] = {}
    for name, value in operator.metrics().items():
        if name.startswith("aimodel_operator_pulsar_admin_requests_total{"):
            method = name.split('method="', 1)[1].split('"', 1)[0]
            out[method] = out.get(method, 0) + value
    return out


def reconciles(operator) -> float:
    return sum(v for n, v in operator.metrics().items() if n.startswith("aimodel_operator_reconciles_total{"))


def test_admin_calls_a_model_costs_seven_a_restart_two_reads_and_nothing_changed_none(
    operator_process,
    pulsar,
    broker,
    pulsar_token,
    pulsar_signing_key,
    gateway,
    k,
    healthy_upstream,
    kubectl,
    kubeconfig,
    tmp_path,
):
    env = tenant_env(pulsar, broker, pulsar_token, pulsar_signing_key, gateway.url, PULSAR_GRANT_COLLECT_SECONDS="3600")
    operator_process.stop()
    operator_process.start(env)
    models = [
        ServedModel(f"c{i}", f"cost-{uuid.uuid4().hex[:6]}", k, kubectl, kubeconfig, k.namespace, tmp_path)
        for i in range(2)
    ]
    models[0].apply(remote(models[0], healthy_upstream))
    wait_for("the first model's token", lambda: secret_token(k, "c0"))
    before = admin_requests(operator_process)
    models[1].apply(remote(models[1], healthy_upstream))
    wait_for("the second model's token", lambda: secret_token(k, "c1"))
    after = admin_requests(operator_process)
    spent = {m: after.get(m, 0) - before.get(m, 0) for m in after}
    # Its topic and the workers' subscription, the dead-letter topic, and four grants: no read.
    assert spent == {"PUT": 3, "POST": 4, "GET": 0}, spent

    # A full reconcile of a converged model asks the admin nothing.
    done = reconciles(operator_process)
    k("annotate", "aimodel", "c1", "touched=yes")
    wait_for("the touched model reconciled", lambda: reconciles(operator_process) > done)
    assert admin_requests(operator_process) == after

    # A restart reads Pulsar's grants twice (the topics, the policies that hold every grant),
    # keeps the tokens it finds, and writes nothing to Pulsar or to the API.
    tokens_before = [secret_token(k, m.name) for m in models]
    operator_process.restart(env)
    wait_for("both models reconciled", lambda: reconciles(operator_process) >= 2)
    assert admin_requests(operator_process) == {"GET": 2}
    assert [secret_token(k, m.name) for m in models] == tokens_before
    assert operator_process.api_writes() == 0
    operator_process.stop()
