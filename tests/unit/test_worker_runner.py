"""The reference worker's pure parts: request parsing, URLs, answers, usage, error classification,
server-sent events and the settings read from the environment."""

from __future__ import annotations

import json

import pytest

from aimodel_worker import Reason
from aimodel_worker.runner import gateway, openai_api, sse
from aimodel_worker.runner.settings import SettingsError, WorkerSettings

DATA = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _payload(**fields) -> bytes:
    return json.dumps({"request_id": "r1", "endpoint": "http://gw/res", "data": DATA, **fields}).encode()


MAX = 1 << 20


def parse(payload: bytes, model: str = "gpt-4o", max_bytes: int = MAX) -> gateway.Request:
    return gateway.parse_request(payload, model, max_bytes)


def test_parse_request_reads_the_gateway_message():
    req = parse(_payload(stream=True))
    assert (req.request_id, req.endpoint, req.stream, req.data) == ("r1", "http://gw/res", True, DATA)
    # stream defaults to data.stream, then false
    assert parse(_payload(data={**DATA, "stream": True})).stream is True
    assert parse(_payload()).stream is False


def test_the_model_is_the_aimodels_not_the_publishers():
    # missing: the worker's own; the same: kept; another: refused, naming both, answerable
    assert parse(_payload(data={"messages": []})).data == {"messages": [], "model": "gpt-4o"}
    assert parse(_payload()).data["model"] == "gpt-4o"
    with pytest.raises(gateway.BadRequest, match="'o1-pro' is not this worker's model 'gpt-4o'") as info:
        parse(_payload(data={**DATA, "model": "o1-pro"}))
    assert (info.value.request_id, info.value.endpoint) == ("r1", "http://gw/res")
    with pytest.raises(gateway.BadRequest, match="'int' is not this worker's model"):
        parse(_payload(data={**DATA, "model": 7}))


def test_a_message_over_the_cap_is_not_parsed():
    with pytest.raises(gateway.TooLarge, match="more than the 100 accepted"):
        parse(b"{" + b" " * 200 + b"}", max_bytes=100)


def test_json_nested_100000_deep_is_a_bad_request_not_a_recursion_error():
    with pytest.raises(gateway.BadRequest, match="nested too deeply"):
        parse(b"[" * 100_000 + b"]" * 100_000)
    nested = b'{"request_id": "r1", "endpoint": "http://gw/res", "data": {"x": ' + b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(gateway.BadRequest, match="nested too deeply"):
        parse(nested + b"}}")


@pytest.mark.parametrize("rid", ["a" * 129, "r1\nINFO forged line", "r 1", "", "ü"])
def test_a_request_id_is_bounded_in_length_and_characters(rid):
    with pytest.raises(gateway.BadRequest, match="request_id") as info:
        parse(_payload(request_id=rid))
    assert info.value.request_id == ""


def test_the_booked_model_is_the_one_the_upstream_says_it_used():
    assert openai_api.booked_model({"model": "gpt-4o-2024-08-06"}, "gpt-4o") == "gpt-4o-2024-08-06"
    for said in (None, 5, "", "x" * 300, "two words", "line\nbreak"):
        assert openai_api.booked_model({"model": said}, "gpt-4o") == "gpt-4o"
    assert openai_api.booked_model("not a dict", "gpt-4o") == "gpt-4o"


@pytest.mark.parametrize(
    ("payload", "error", "rid", "endpoint"),
    [
        (b"not json", "not JSON", "", ""),
        (b"[1]", "not a JSON object", "", ""),
        (json.dumps({"endpoint": "http://gw/res", "data": DATA}).encode(), "request_id", "", "http://gw/res"),
        (json.dumps({"request_id": "r1", "endpoint": "file:///etc", "data": DATA}).encode(), "endpoint", "r1", ""),
        (
            json.dumps({"request_id": "r1", "endpoint": "http://gw/res", "data": "x"}).encode(),
            "data",
            "r1",
            "http://gw/res",
        ),
        (_payload(stream="yes"), "stream", "r1", "http://gw/res"),
    ],
)
def test_parse_request_refuses_what_is_not_a_request(payload, error, rid, endpoint):
    with pytest.raises(gateway.BadRequest, match=error) as info:
        parse(payload)
    assert (info.value.request_id, info.value.endpoint) == (rid, endpoint)


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://api.openai.com", "https://api.openai.com/v1/chat/completions"),
        ("https://api.openai.com/", "https://api.openai.com/v1/chat/completions"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
        ("http://h:8080/openai/v1/chat/completions", "http://h:8080/openai/v1/chat/completions"),
    ],
)
def test_chat_url(base, url):
    assert openai_api.chat_url(base) == url


def test_endpoint_url_forms():
    assert gateway.websocket_url("http://gw/res/ws") == "ws://gw/res/ws"
    assert gateway.websocket_url("https://gw/res/ws") == "wss://gw/res/ws"
    assert gateway.websocket_url("ws://gw/res/ws") == "ws://gw/res/ws"
    assert gateway.http_url("ws://gw/res") == "http://gw/res"
    assert gateway.http_url("https://gw/res") == "https://gw/res"


def test_messages():
    assert gateway.answer("r", {"x": 1}) == {"request_id": "r", "data": {"x": 1}}
    assert gateway.chunk("r", {"x": 1}) == {"request_id": "r", "end": False, "data": {"x": 1}}
    assert gateway.end("r") == {"request_id": "r", "end": True}
    assert gateway.end("r", {"error": {}}) == {"request_id": "r", "end": True, "data": {"error": {}}}
    record = gateway.usage_record("r", {"prompt_tokens": 3, "completion_tokens": "4"}, "m", "n", "ns")
    assert record == {
        "request_id": "r",
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 0},
        "model": "m",
        "ai_model_name": "n",
        "ai_model_namespace": "ns",
    }


def test_usage_is_requested_once_and_remembered_as_added():
    body, added = openai_api.with_usage_requested({**DATA, "stream": True})
    assert added and body["stream_options"] == {"include_usage": True}
    asked = {**DATA, "stream": True, "stream_options": {"include_usage": True}}
    assert openai_api.with_usage_requested(asked) == (asked, False)
    body, added = openai_api.with_usage_requested({**DATA, "stream_options": {"other": 1}})
    assert added and body["stream_options"] == {"other": 1, "include_usage": True}


def _openai(message: str, kind: str, code: str | None) -> str:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


@pytest.mark.parametrize(
    ("status", "body", "reason", "retry"),
    [
        (
            401,
            _openai("Incorrect API key provided: sk-***", "invalid_request_error", "invalid_api_key"),
            Reason.AUTHENTICATION_ERROR,
            None,
        ),
        (
            429,
            _openai("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
            Reason.API_QUOTA_EXCEEDED_ERROR,
            None,
        ),
        (429, _openai("Rate limit reached for requests", "requests", "rate_limit_exceeded"), None, 0.25),
        (
            404,
            _openai("The model `x` does not exist", "invalid_request_error", "model_not_found"),
            Reason.CONFIGURATION_ERROR,
            None,
        ),
        (404, "<html>Not Found</html>", Reason.GENERAL_ERROR, None),
        (403, _openai("Project does not have access", "invalid_request_error", None), Reason.GENERAL_ERROR, None),
        (400, _openai("messages is required", "invalid_request_error", None), None, None),
        (500, _openai("server error", "server_error", None), None, None),
        (503, "Service Unavailable", None, None),
    ],
)
def test_classify(status, body, reason, retry):
    failure = openai_api.classify(status, body, {"retry-after-ms": "250"})
    assert failure.reason == reason
    assert failure.retry_after == retry
    assert failure.body["error"]["message"]
    assert set(failure.body["error"]) == {"message", "type", "param", "code"}


def test_a_non_json_error_body_becomes_the_message():
    failure = openai_api.classify(502, "<html>\n Bad   Gateway </html>")
    assert failure.message == "upstream answered HTTP 502: <html> Bad Gateway </html>"


def test_retry_after_headers():
    assert openai_api.retry_after({"retry-after-ms": "1500"}) == 1.5
    assert openai_api.retry_after({"retry-after": "2"}) == 2.0
    assert openai_api.retry_after({"retry-after": "3600"}) == openai_api.MAX_RETRY_AFTER
    assert openai_api.retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == openai_api.DEFAULT_RETRY_AFTER
    assert openai_api.retry_after({}) == openai_api.DEFAULT_RETRY_AFTER


def test_server_sent_events():
    lines = [": comment", "event: x", 'data: {"a": 1}', "", "data:first", "data: second", "", "", "data: [DONE]"]
    assert list(sse.sse_data(lines)) == ['{"a": 1}', "first\nsecond", "[DONE]"]


def test_a_whole_completion_as_one_chunk():
    completion = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"total_tokens": 2},
    }
    assert openai_api.completion_as_chunk(completion) == {
        "id": "c1",
        "created": 1,
        "model": "m",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    }


POD_ENV = {
    "NODE_TYPE": "remote",
    "MODEL_NAME": "gpt-4o",
    "API_URL": "https://api.openai.com",
    "API_KEY": "sk-1",
    "MAX_PROCESS_NUM": "16",
    "AIMODEL_NAME": "chat",
    "AIMODEL_NAMESPACE": "team-a",
    "PULSAR_URL": "pulsar://pulsar:6650",
    "PULSAR_TOKEN": "",
    "RES_TOPIC_NAME": "res-topic",
}


def test_settings_from_the_pod_environment():
    s = WorkerSettings.from_env(POD_ENV)
    assert s.topic == "persistent://public/default/model-gpt-4o"
    assert s.subscription == "model-gpt-4o-subscription"
    assert s.chat_url == "https://api.openai.com/v1/chat/completions"
    assert (s.max_process_num, s.api_key, s.res_topic, s.aimodel_namespace) == (16, "sk-1", "res-topic", "team-a")
    local = WorkerSettings.from_env({**POD_ENV, "NODE_TYPE": "local", "API_URL": ""})
    assert local.chat_url == "http://127.0.0.1:8080/v1/chat/completions"
    custom = WorkerSettings.from_env({**POD_ENV, "NODE_TYPE": "local", "LOCAL_API_URL": "http://127.0.0.1:9000/v1"})
    assert custom.chat_url == "http://127.0.0.1:9000/v1/chat/completions"
    assert s.dead_letter_topic == "persistent://public/default/model-gpt-4o-DLQ"
    assert (s.max_redeliveries, s.max_message_bytes, s.answer_endpoints) == (5, 4 << 20, ())
    fenced = WorkerSettings.from_env({**POD_ENV, "ANSWER_ENDPOINTS": "http://gw:8080/res, ws://gw:8080/res/ws"})
    assert fenced.answer_endpoints == ("http://gw:8080/res", "ws://gw:8080/res/ws")
    basic = WorkerSettings.from_env({**POD_ENV, "API_URL": "https://u:p@api.example", "API_KEY": ""})
    assert basic.chat_url == "https://u:p@api.example/v1/chat/completions"
    defaults = WorkerSettings.from_env({"MODEL_NAME": "m", "API_URL": "http://x"})
    assert (defaults.max_process_num, defaults.pulsar_url, defaults.res_topic) == (
        128,
        "pulsar://localhost:6650",
        "res-topic",
    )


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"MODEL_NAME": ""}, "MODEL_NAME is not set"),
        ({"API_URL": ""}, "API_URL is not set"),
        ({"API_URL": "ftp://x"}, "API_URL='ftp://x' is not an http"),
        ({"NODE_TYPE": "gpu"}, "NODE_TYPE='gpu' must be local or remote"),
        ({"MAX_PROCESS_NUM": "many"}, "MAX_PROCESS_NUM='many' is not a number"),
        ({"MAX_PROCESS_NUM": "0"}, "MAX_PROCESS_NUM='0' must be at least 1"),
        # aiohttp refuses basic auth in the URL next to an Authorization header on every request
        ({"API_URL": "https://u:p@api.example"}, "API_URL carries user:password@ and API_KEY is set"),
        ({"API_URL": "ftp://u:secret@x"}, "API_URL='ftp://x' is not an http"),
        ({"ANSWER_ENDPOINTS": "gateway:8080"}, "ANSWER_ENDPOINTS: not an http"),
        ({"MAX_REDELIVERIES": "0"}, "MAX_REDELIVERIES='0' must be at least 1"),
    ],
)
def test_settings_errors_name_the_variable(change, error):
    with pytest.raises(SettingsError, match=error):
        WorkerSettings.from_env({**POD_ENV, **change})


async def test_reports_are_bounded_in_rate_and_in_memory(monkeypatch):
    """Requesters cannot flood the API server or the worker's memory with distinct errors."""
    from aimodel_worker.runner import reports as worker_module
    from aimodel_worker.runner.worker import Worker

    clock = [1000.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock[0])
    sent: list[str] = []

    async def report(reason, message):
        sent.append(message)

    w = Worker(WorkerSettings.from_env(POD_ENV), report)
    for i in range(20):
        w.report(Reason.GENERAL_ERROR, f"error {i}")
    await w.flush_reports()
    assert sent == [f"error {i}" for i in range(worker_module.REPORT_BURST)]
    clock[0] += worker_module.REPORT_PERIOD
    w.report(Reason.GENERAL_ERROR, "later")
    w.report(Reason.GENERAL_ERROR, "later still")
    await w.flush_reports()
    assert sent[-1] == "later" and len(sent) == worker_module.REPORT_BURST + 1
    for i in range(2000):
        clock[0] += worker_module.REPORT_PERIOD
        w.report(Reason.GENERAL_ERROR, f"distinct {i}")
    await w.flush_reports()
    assert len(w.reports.reported) == worker_module.REPORTS_REMEMBERED
    # the same error again within REPORT_INTERVAL: not sent
    before = len(sent)
    w.report(Reason.GENERAL_ERROR, "distinct 1999")
    await w.flush_reports()
    assert len(sent) == before
