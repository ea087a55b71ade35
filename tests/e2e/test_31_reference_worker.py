"""The reference worker (aimodel-worker) end to end: requests through the real Pulsar standalone,
answers to a stand-in gateway endpoint, a stand-in OpenAI-style API upstream, usage on the result
topic, each upstream error turned into the AIModel's status, redelivery after a killed worker and
a graceful stop. The worker runs as a local process with its Deployment's environment and its
ServiceAccount's token."""

from __future__ import annotations

import json
import signal
import socket
import time
import uuid

import pytest

from kube_helpers import wait_for

RES_TOPIC = "res-topic"


@pytest.fixture
def pulsar_client(broker, pulsar_token):
    from devcluster import pulsar as pulsar_mod

    client = pulsar_mod.client(broker, pulsar_token)
    yield client
    client.close()


@pytest.fixture
def model(served_model):
    return served_model


def request(model, gateway, *, stream: bool = False, text: str = "hello there"):
    return gateway.request(model.model_name, text, stream)


def test_answers_plain_and_streamed_requests_and_publishes_usage(
    model, gateway, pulsar_client, send_requests, upstream
):
    results = pulsar_client.subscribe(RES_TOPIC, f"t-{uuid.uuid4().hex[:6]}")
    worker = model.start()
    plain_id, plain = request(model, gateway, text="what is the answer")
    stream_id, streamed = request(model, gateway, stream=True, text="count to three")
    send_requests(model.topic, [plain])
    send_requests(model.topic, [streamed])

    answer = gateway.answer(plain_id)
    assert answer["data"]["object"] == "chat.completion"
    assert answer["data"]["choices"][0]["message"]["content"] == "echo: what is the answer"
    frames = gateway.stream(stream_id)
    assert all(f["request_id"] == stream_id for f in frames)
    assert [f["end"] for f in frames] == [False] * (len(frames) - 1) + [True]
    assert "data" not in frames[-1]
    text = "".join(f["data"]["choices"][0]["delta"].get("content", "") for f in frames[:-1])
    assert text == "echo: count to three"
    # The worker asked for usage on its own; the requester gets no usage chunk or key it did not ask for.
    assert all(f["data"]["choices"] and "usage" not in f["data"] for f in frames[:-1])
    # The API key came from the model's Secret, as a bearer token.
    assert {s["authorization"] for s in upstream.seen[-2:]} == {f"Bearer {upstream.api_key}"}

    records = {}
    for _ in range(2):
        msg = results.receive(timeout_millis=30000)
        results.acknowledge(msg)
        doc = json.loads(msg.data())
        records[doc["request_id"]] = doc
    assert records[plain_id] == {
        "request_id": plain_id,
        "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9},
        "model": model.model_name,
        "ai_model_name": model.name,
        "ai_model_namespace": records[plain_id]["ai_model_namespace"],
    }
    assert records[plain_id]["ai_model_namespace"].startswith("t-")
    assert records[stream_id]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert model.state()[0] == "Running"
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.log_tail()


@pytest.mark.parametrize(
    ("mode", "reason", "message"),
    [
        ("revoked", "AuthenticationError", "Incorrect API key provided"),
        ("quota", "APIQuotaExceededError", "You exceeded your current quota"),
        ("unknown-model", "ConfigurationError", "does not exist or you do not have access to it"),
        ("forbidden", "GeneralError", "Project does not have access to this API."),
    ],
)
def test_an_upstream_error_fails_the_model_and_answers_the_requester(
    model, gateway, send_requests, upstream, k, mode, reason, message
):
    worker = model.start()
    if mode == "unknown-model":
        upstream.models.discard(model.model_name)
    else:
        upstream.mode = mode
    for stream in (False, True):
        rid, msg = request(model, gateway, stream=stream)
        send_requests(model.topic, [msg])
        if stream:
            frames = gateway.stream(rid)
            error = frames[-1]["data"]["error"]
            assert frames[-1]["end"] is True
        else:
            error = gateway.answer(rid)["data"]["error"]
        assert message in error["message"], error

    state = wait_for(f"Failed with {reason}", lambda: model.state()[0] == "Failed" and model.state())
    assert state[1].startswith(f"{reason}: ") and message in state[1], state
    # The pod's termination message says the same, for when the worker exits.
    assert model.termination_log.read_text().startswith(f"{reason}: ")

    # Fixed upstream, the next spec change clears it; the worker answers again.
    upstream.mode = "ok"
    upstream.models.add(model.model_name)
    k("patch", "aimodel", model.name, "--type=merge", "-p", '{"spec":{"maxProcessNum":9}}')
    wait_for("Running again", lambda: model.state()[0] == "Running")
    rid, msg = request(model, gateway)
    send_requests(model.topic, [msg])
    assert gateway.answer(rid)["data"]["object"] == "chat.completion"
    worker.stop()


def test_a_rate_limit_backs_off_without_failing_the_model(model, gateway, send_requests, upstream, k):
    worker = model.start()
    upstream.mode = "rate_limited"
    upstream.rate_limited_times = 3
    calls = upstream.calls
    rid, msg = request(model, gateway)
    send_requests(model.topic, [msg])
    assert gateway.answer(rid)["data"]["object"] == "chat.completion"
    assert upstream.calls - calls == 4, "three 429s, each waited out (retry-after-ms), then the answer"
    events = k.json("get", "events", "--field-selector", "type=Warning")["items"]
    assert not [e for e in events if e["involvedObject"].get("name") == model.name], events
    assert model.state()[0] == "Running"
    worker.stop()


def test_pulsar_unreachable_at_start_fails_the_model(model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    worker = model.start(PULSAR_URL=f"pulsar://127.0.0.1:{dead}")
    assert worker.wait(timeout=60) == 1, worker.log_tail()
    state = wait_for("Failed", lambda: model.state()[0] == "Failed" and model.state())
    assert state[1].startswith("MessageQueueConnectionError: ") and str(dead) in state[1], state
    assert model.termination_log.read_text().startswith("MessageQueueConnectionError: ")


def test_a_request_in_flight_on_a_killed_worker_is_answered_by_another(
    model, gateway, send_requests, upstream, pulsar, pulsar_token
):
    from devcluster import pulsar as pulsar_mod

    first = model.start()
    upstream.delay = 30.0
    rid, msg = request(model, gateway)
    send_requests(model.topic, [msg])
    wait_for("the request in flight upstream", lambda: upstream.inflight == 1, timeout=30)
    first.signal(signal.SIGKILL)
    first.wait(timeout=10)
    upstream.delay = 0.0
    model.start()
    assert gateway.answer(rid, timeout=60)["data"]["object"] == "chat.completion"
    wait_for(
        "the backlog drained",
        lambda: pulsar_mod.backlog(pulsar, pulsar_token, model.rest_topic, model.subscription) == 0,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["post", "websocket"])
def test_an_answer_the_gateway_refuses_is_handed_back_and_answered_once(
    model, gateway, send_requests, upstream, pulsar, pulsar_token, stream
):
    """The gateway restarting while an answer is on its way (HTTP 503): the request is handed back
    (an awaited nack), redelivered and answered once; nothing stays unacknowledged."""
    from devcluster import pulsar as pulsar_mod

    worker = model.start()
    refused = gateway.refused
    gateway.refuse = 1
    rid, msg = request(model, gateway, stream=stream)
    send_requests(model.topic, [msg])
    if stream:
        frames = gateway.stream(rid, timeout=60)
        assert frames[-1]["end"] is True and "data" not in frames[-1], frames
    else:
        assert gateway.answer(rid, timeout=60)["data"]["object"] == "chat.completion"
    assert gateway.refused == refused + 1
    wait_for(
        "the backlog drained",
        lambda: pulsar_mod.backlog(pulsar, pulsar_token, model.rest_topic, model.subscription) == 0,
    )
    assert len(gateway.answers.get(rid, [])) + (rid in gateway.ended) == 1
    assert "handed back" in worker.log.read_text()
    assert "never awaited" not in worker.log.read_text()


def test_sigterm_past_the_grace_hands_the_request_back(model, gateway, send_requests, upstream, pulsar, pulsar_token):
    """A request still upstream when the grace ends is handed back (awaited) and another worker answers it."""
    from devcluster import pulsar as pulsar_mod

    first = model.start(SHUTDOWN_GRACE="0.5")
    upstream.delay = 30.0
    rid, msg = request(model, gateway)
    send_requests(model.topic, [msg])
    wait_for("the request in flight upstream", lambda: upstream.inflight == 1, timeout=30)
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0, first.log_tail()
    upstream.delay = 0.0
    model.start()
    assert gateway.answer(rid, timeout=60)["data"]["object"] == "chat.completion"
    wait_for(
        "the backlog drained",
        lambda: pulsar_mod.backlog(pulsar, pulsar_token, model.rest_topic, model.subscription) == 0,
    )
    assert "never awaited" not in first.log.read_text(), first.log_tail()


def test_sigterm_finishes_the_requests_in_flight(model, gateway, send_requests, upstream, pulsar, pulsar_token):
    from devcluster import pulsar as pulsar_mod

    worker = model.start()
    upstream.delay = 2.0
    ids = []
    for _ in range(3):
        rid, msg = request(model, gateway)
        send_requests(model.topic, [msg])
        ids.append(rid)
    wait_for("three requests in flight", lambda: upstream.inflight == 3, timeout=30)
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.log_tail()
    assert time.monotonic() - started < 10
    for rid in ids:
        assert gateway.answer(rid, timeout=1)["data"]["object"] == "chat.completion"
    assert pulsar_mod.backlog(pulsar, pulsar_token, model.rest_topic, model.subscription) == 0


def test_a_local_model_is_served_by_the_model_server_in_its_pod(
    served_operator, k, namespace, healthy_upstream, gateway, send_requests, kubectl, kubeconfig, tmp_path
):
    """NODE_TYPE=local: the worker calls LOCAL_API_URL (the pod's own model server, the stand-in
    here) with no key, and answers like a remote one."""
    from standins.kubelet import WorkerProcess, worker_environment

    model_name = f"tinyllama-{uuid.uuid4().hex[:6]}"
    healthy_upstream.models.add(model_name)
    k.apply(
        {
            "apiVersion": "model.youxam.com/v1alpha1",
            "kind": "AIModel",
            "metadata": {"name": "local"},
            "spec": {"type": "local", "model": model_name, "image": "user/image:tag"},
        }
    )
    wait_for("Running", lambda: (k.get("aimodel", "local").get("status") or {}).get("state") == "Running")
    env = worker_environment(kubectl, kubeconfig, namespace, "local", tmp_path)
    assert env["NODE_TYPE"] == "local" and env["API_KEY"] == ""
    worker = WorkerProcess({**env, "LOCAL_API_URL": healthy_upstream.url}, tmp_path / "local-worker.log").start()
    try:
        rid, msg = gateway.request(model_name, "hi local")
        send_requests(f"persistent://public/default/model-{model_name}", [msg])
        assert gateway.answer(rid)["data"]["choices"][0]["message"]["content"] == "echo: hi local"
        seen = [s for s in healthy_upstream.seen if s["body"].get("model") == model_name]
        assert seen and seen[-1]["authorization"] == ""
    finally:
        worker.stop()


def test_a_worker_stopped_again_and_again_on_a_busy_machine_exits_0(broker, pulsar_token, tmp_path):
    """After a clean stop the Pulsar client's native threads could crash the interpreter's teardown
    (8 of 40 stops ended in SIGSEGV or SIGABRT on two busy cores): the worker now leaves without it."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "MODEL_NAME": f"stops-{uuid.uuid4().hex[:6]}",
        "NODE_TYPE": "remote",
        "API_URL": "http://127.0.0.1:9/v1",
        "API_KEY": "unused",
        "PULSAR_URL": broker,
        "PULSAR_TOKEN": pulsar_token,
        "RES_TOPIC_NAME": RES_TOPIC,
        "MAX_PROCESS_NUM": "8",
    }
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    codes = []
    try:
        for i in range(20):
            log = tmp_path / f"worker-{i}.log"
            with log.open("w") as out:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "aimodel_worker.runner.cli"], env=env, stdout=out, stderr=subprocess.STDOUT
                )
            try:
                wait_for("the worker consuming", lambda log=log: "consuming" in log.read_text(), timeout=30)
                worker.send_signal(signal.SIGTERM)
                codes.append(worker.wait(timeout=30))
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
            assert "stopped:" in log.read_text()
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    assert codes == [0] * 20


def test_the_next_request_is_answered_while_the_last_ones_usage_is_still_unpublished(
    model, gateway, send_requests, pulsar_client, pulsar, pulsar_token
):
    """One request at a time (MAX_PROCESS_NUM=1), the usage records held in the result producer's
    batch for a minute (USAGE_PUBLISH_DELAY_MS): the second request is answered while the first
    one's record is unpublished, and neither is acknowledged before its record is. Killed then, the
    worker loses neither record: both requests come back, are answered again by another worker,
    their records published, and only then acknowledged."""
    from devcluster import pulsar as pulsar_mod

    results = pulsar_client.subscribe(RES_TOPIC, f"t-{uuid.uuid4().hex[:6]}")
    first = model.start(MAX_PROCESS_NUM="1", USAGE_PUBLISH_DELAY_MS="60000")
    ids = []
    for text in ("first", "second"):
        rid, msg = request(model, gateway, text=text)
        send_requests(model.topic, [msg])
        ids.append(rid)
    for rid in ids:
        assert gateway.answer(rid, timeout=30)["data"]["object"] == "chat.completion"
    # Both answered by the one slot, neither record published, so neither acknowledged.
    assert pulsar_mod.backlog(pulsar, pulsar_token, model.rest_topic, model.subscription) == 2
    res_stats = pulsar_mod.stats(pulsar, pulsar_token, f"persistent/public/default/{RES_TOPIC}")
    assert res_stats["subscriptions"][results.subscription_name()]["msgBacklog"] == 0

    first.signal(signal.SIGKILL)
    first.wait(timeout=10)
    model.start(MAX_PROCESS_NUM="1")
    records = {}
    while set(records) != set(ids):
        msg = results.receive(timeout_millis=60000)
        results.acknowledge(msg)
        doc = json.loads(msg.data())
        records[doc["request_id"]] = doc
    assert all(records[rid]["usage"]["total_tokens"] > 0 for rid in ids), records
    wait_for(
        "both acknowledged",
        lambda: pulsar_mod.backlog(pulsar, pulsar_token, model.rest_topic, model.subscription) == 0,
    )
    assert all(len(gateway.answers[rid]) == 2 for rid in ids), "each answered by both workers"


def test_a_usage_record_that_cannot_be_published_hands_its_request_back(
    model, gateway, send_requests, pulsar, pulsar_token
):
    """Its result topic terminated (it takes no more messages), the worker answers, fails to publish
    the usage record and hands the request back, never acknowledging it: redelivered, answered
    again, then moved to the dead-letter topic, where it is kept."""
    import urllib.error
    import urllib.request

    from devcluster import pulsar as pulsar_mod

    def dead_lettered() -> int:
        try:
            return pulsar_mod.backlog(pulsar, pulsar_token, dead_letters, f"model-{model.model_name}-DLQ-subscription")
        except (urllib.error.HTTPError, KeyError):  # not there yet
            return 0

    res_topic = f"res-{uuid.uuid4().hex[:6]}"
    # The model's own token may publish to the one result topic only: the admin token here.
    worker = model.start(RES_TOPIC_NAME=res_topic, PULSAR_TOKEN=pulsar_token, MAX_REDELIVERIES="2")
    wait_for("the worker consuming", lambda: "consuming" in worker.log.read_text(), timeout=30)
    terminate = urllib.request.Request(
        f"{pulsar}/admin/v2/persistent/public/default/{res_topic}/terminate",
        method="POST",
        headers={"Authorization": f"Bearer {pulsar_token}"},
    )
    urllib.request.urlopen(terminate, timeout=30).close()
    dead_letters = f"persistent/public/default/model-{model.model_name}-DLQ"
    rid, msg = request(model, gateway)
    send_requests(model.topic, [msg])
    wait_for("the request in the dead-letter topic", lambda: dead_lettered() == 1, timeout=60)
    assert len(gateway.answers[rid]) >= 2, "answered, handed back, redelivered and answered again"
    # Moved (the client acknowledges it once it is in the dead-letter topic), not lost.
    wait_for(
        "the request off the subscription",
        lambda: pulsar_mod.backlog(pulsar, pulsar_token, model.rest_topic, model.subscription) == 0,
    )
    assert "handing it back" in worker.log.read_text()
    worker.stop()
