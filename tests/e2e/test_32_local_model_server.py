"""A local model (the seed's TinyLlama example) served by a model server beside the worker: the
reference worker, in local mode, takes nothing from the real Pulsar before the server answers,
then answers through it; a server that does not serve the model is the seed's ConfigurationError.
The stand-in upstream plays the local server (its /v1/models answers 503 while "loading")."""

from __future__ import annotations

import uuid

import pytest

from devcluster import pulsar as pulsar_mod
from kube_helpers import ServedModel, wait_for


@pytest.fixture
def local_model(served_operator, k, namespace, healthy_upstream, kubectl, kubeconfig, tmp_path):
    """A local AIModel whose worker's LOCAL_API_URL (from its template) is the stand-in."""
    upstream = healthy_upstream
    model = ServedModel("tiny", f"TinyLlama-1.1B-{uuid.uuid4().hex[:6]}", k, kubectl, kubeconfig, namespace, tmp_path)
    template = {"spec": {"containers": [{"name": "worker", "env": [{"name": "LOCAL_API_URL", "value": upstream.url}]}]}}
    model.apply({"type": "local", "model": model.model_name, "image": "user/image:tag", "template": template})
    env = model.env()
    assert env["NODE_TYPE"] == "local" and env["LOCAL_API_URL"] == upstream.url
    yield model
    model.stop()


def consumers(pulsar: str, token: str, model) -> int:
    stats = pulsar_mod.stats(pulsar, token, model.rest_topic)
    return len(stats["subscriptions"][model.subscription]["consumers"])


def test_the_worker_waits_for_the_local_server_then_answers_through_it(
    local_model, upstream, gateway, send_requests, broker, pulsar, pulsar_token
):
    import pulsar as pulsar_client

    upstream.models.add(local_model.model_name)
    upstream.loading = True
    # The subscription exists before the worker, as on a running system (other workers, KEDA).
    client = pulsar_mod.client(broker, pulsar_token)
    shared = pulsar_client.ConsumerType.Shared
    client.subscribe(local_model.topic, local_model.subscription, consumer_type=shared).close()
    client.close()
    rid, msg = gateway.request(local_model.model_name, "hello local")
    send_requests(local_model.topic, [msg])

    looks = upstream.model_looks
    worker = local_model.start()
    wait_for("the worker looking at the local server, again and again", lambda: upstream.model_looks >= looks + 3)
    assert consumers(pulsar, pulsar_token, local_model) == 0, "joined the subscription before the server was ready"
    assert gateway.answers.get(rid) is None and worker.proc.poll() is None

    upstream.loading = False
    answer = gateway.answer(rid)
    assert answer["data"]["choices"][0]["message"]["content"] == "echo: hello local"
    assert consumers(pulsar, pulsar_token, local_model) == 1
    assert local_model.state()[0] == "Running"
    assert "waiting for the local model server" in worker.log_tail()


def test_a_local_server_without_the_model_is_the_seeds_configuration_error(local_model, upstream):
    upstream.models.discard(local_model.model_name)
    worker = local_model.start()
    assert worker.wait(timeout=60) == 1, worker.log_tail()
    state = wait_for("Failed", lambda: local_model.state()[0] == "Failed" and local_model.state())
    assert state[1] == f'ConfigurationError: Local model "{local_model.model_name}" is not supported.'
