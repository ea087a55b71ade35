"""The hostile queue: whatever anyone who can publish on ``model-<model>`` sends, on the real Pulsar.

Invariants, checked at the end of every case:

- every request is answered exactly once, or is in the dead-letter topic ``model-<model>-DLQ``;
- the subscription's backlog is 0 and no consumer holds an unacknowledged message;
- the AIModel stays ``Running`` (nothing here is its upstream's fault);
- the API key never reaches an answer endpoint, and nothing reaches an endpoint that is not allowed.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from devcluster import pulsar as pulsar_mod
from kube_helpers import wait_for

MAX_REDELIVERIES = 2


@pytest.fixture
def elsewhere():
    """Where hostile requests try to send answers: a server nothing may reach."""
    from standins.endpoint import EndpointStandIn

    with EndpointStandIn() as other:
        yield other


def _drained(pulsar: str, token: str, model) -> bool | str:
    sub = pulsar_mod.stats(pulsar, token, model.rest_topic)["subscriptions"][model.subscription]
    unacked = sum(int(c.get("unackedMessages", 0)) for c in sub.get("consumers", []))
    return not (sub["msgBacklog"] or unacked)


def _dead_letters(broker: str, token: str, model, expected: int) -> list[bytes]:
    """What the dead-letter topic holds (read through its subscription, acknowledged)."""
    import pulsar

    client = pulsar_mod.client(broker, token)
    try:
        consumer = client.subscribe(
            f"{model.topic}-DLQ",
            f"model-{model.model_name}-DLQ-subscription",
            initial_position=pulsar.InitialPosition.Earliest,
        )
        got: list[bytes] = []
        while len(got) < expected + 1:
            try:
                msg = consumer.receive(timeout_millis=3000 if len(got) >= expected else 60_000)
            except pulsar.Timeout:
                break
            got.append(msg.data())
            consumer.acknowledge(msg)
        consumer.close()
        return got
    finally:
        client.close()


def _publish(broker: str, token: str, topic: str, payloads: list[bytes]) -> None:
    """As a publisher would; chunking lets a message above the broker's 5 MB limit through."""
    client = pulsar_mod.client(broker, token)
    try:
        producer = client.create_producer(topic, chunking_enabled=True, batching_enabled=False)
        for payload in payloads:
            producer.send(payload)
        producer.close()
    finally:
        client.close()


def _answered_once(gateway, rid: str) -> bool:
    return len(gateway.answers.get(rid, [])) + (rid in gateway.ended) == 1


def test_a_hostile_queue_leaves_every_request_answered_once_or_dead_lettered(
    served_model, gateway, elsewhere, upstream, pulsar, pulsar_token, broker, k
):
    model = served_model
    worker = model.start(MAX_REDELIVERIES=str(MAX_REDELIVERIES))
    gw = gateway.url
    good = [gateway.request(model.model_name, f"good {i}", stream=i % 2 == 1) for i in range(4)]

    def msg(**fields: Any) -> bytes:
        return json.dumps(fields).encode()

    told: dict[str, str] = {}  # request id -> what its error answer must say

    def refused(what: str, **fields: Any) -> bytes:
        rid = str(uuid.uuid4())
        told[rid] = what
        return msg(request_id=rid, endpoint=f"{gw}/res", **fields)

    data = {"model": model.model_name, "messages": [{"role": "user", "content": "hi"}]}
    answered_with_error = [
        refused("data is missing or not an object", data="x"),
        refused("stream is not a boolean", data=data, stream="yes"),
        refused("data.model 'o1-pro' is not this worker's model", data={**data, "model": "o1-pro"}),
        *(refused("is not this worker's model", data={**data, "model": f"unknown-{i}"}) for i in range(20)),
    ]
    dead = {
        "10 MB": b'{"request_id": "big", "endpoint": "'
        + f"{gw}/res".encode()
        + b'", "pad": "'
        + b"x" * (10 << 20)
        + b'"}',
        "nested": b'{"request_id": "deep", "endpoint": "'
        + f"{gw}/res".encode()
        + b'", "data": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}",
        "not JSON": b"\xff\xfe not json",
        "no request_id": msg(endpoint=f"{gw}/res", data=data),
        "loopback": msg(request_id="to-loopback", endpoint=f"{elsewhere.url}/res", data=data),
        "link-local": msg(request_id="to-metadata", endpoint="http://169.254.169.254/latest/meta-data/", data=data),
        "redirect": msg(request_id="redirected", endpoint=f"{gw}/moved", data=data),
        "forged log line": msg(request_id="x\nERROR forged", endpoint=f"{elsewhere.url}/res", data=data),
    }
    gateway.moved_to = f"{elsewhere.url}/res"
    moved_before, refused_before = gateway.moved, gateway.refused
    gateway.refuse = 1  # the gateway restarting as the first answer arrives
    _publish(
        broker,
        pulsar_token,
        model.topic,
        [*(json.dumps(m).encode() for _, m in good), *dead.values(), *answered_with_error],
    )

    for rid, request in good:
        if request["stream"]:
            assert gateway.stream(rid, timeout=120)[-1] == {"request_id": rid, "end": True}
        else:
            assert gateway.answer(rid, timeout=120)["data"]["object"] == "chat.completion"
    for rid, what in told.items():
        error = gateway.answer(rid, timeout=120)["data"]["error"]
        assert what in error["message"] and error["type"] == "invalid_request_error", error
    letters = _dead_letters(broker, pulsar_token, model, len(dead))
    landed = {name for name, payload in dead.items() if payload in letters}
    assert landed == set(dead) and len(letters) == len(dead), (sorted(set(dead) - landed), len(letters))
    wait_for("the backlog drained, nothing unacknowledged", lambda: _drained(pulsar, pulsar_token, model), timeout=60)

    assert gateway.refused == refused_before + 1
    for rid in [*(rid for rid, _ in good), *told]:
        assert _answered_once(gateway, rid), rid
    assert gateway.moved - moved_before == MAX_REDELIVERIES + 1, "the redirect seen on each delivery, never followed"
    assert elsewhere.count() == 0 and not elsewhere.frames
    seen = json.dumps([gateway.answers, gateway.frames])
    assert upstream.api_key not in seen
    assert "o1-pro" not in {str(s["body"].get("model")) for s in upstream.seen}
    assert model.state()[0] == "Running", model.state()
    log = worker.log.read_text()
    assert "\nERROR forged" not in log
    assert worker.proc.poll() is None, worker.log_tail()
