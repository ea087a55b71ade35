"""The reference worker's pure parts: request parsing, URLs, answers, usage, error classification,
server-sent events and the settings read from the environment."""

from __future__ import annotations

import json

import pytest

from aimodel_worker import Reason
from aimodel_worker.runner import protocol
from aimodel_worker.runner.settings import SettingsError, WorkerSettings

DATA = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _payload(**fields) -> bytes:
    return json.dumps({"request_id": "r1", "endpoint": "http://gw/res", "data": DATA, **fields}).encode()


def test_parse_request_reads_the_gateway_message():
    req = protocol.parse_request(_payload(stream=True))
    assert (req.request_id, req.endpoint, req.stream, req.data) == ("r1", "http://gw/res", True, DATA)
    # stream defaults to data.stream, then false
    assert protocol.parse_request(_payload(data={**DATA, "stream": True})).stream is True
    assert protocol.parse_request(_payload()).stream is False


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
    with pytest.raises(protocol.BadRequest, match=error) as info:
        protocol.parse_request(payload)
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
    assert protocol.chat_url(base) == url


def test_endpoint_url_forms():
    assert protocol.websocket_url("http://gw/res/ws") == "ws://gw/res/ws"
    assert protocol.websocket_url("https://gw/res/ws") == "wss://gw/res/ws"
    assert protocol.websocket_url("ws://gw/res/ws") == "ws://gw/res/ws"
    assert protocol.http_url("ws://gw/res") == "http://gw/res"
    assert protocol.http_url("https://gw/res") == "https://gw/res"


def test_messages():
    assert protocol.answer("r", {"x": 1}) == {"request_id": "r", "data": {"x": 1}}
    assert protocol.chunk("r", {"x": 1}) == {"request_id": "r", "end": False, "data": {"x": 1}}
    assert protocol.end("r") == {"request_id": "r", "end": True}
    assert protocol.end("r", {"error": {}}) == {"request_id": "r", "end": True, "data": {"error": {}}}
    record = protocol.usage_record("r", {"prompt_tokens": 3, "completion_tokens": "4"}, "m", "n", "ns")
    assert record == {
        "request_id": "r",
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 0},
        "model": "m",
        "ai_model_name": "n",
        "ai_model_namespace": "ns",
    }


def test_usage_is_requested_once_and_remembered_as_added():
    body, added = protocol.with_usage_requested({**DATA, "stream": True})
    assert added and body["stream_options"] == {"include_usage": True}
    asked = {**DATA, "stream": True, "stream_options": {"include_usage": True}}
    assert protocol.with_usage_requested(asked) == (asked, False)
    body, added = protocol.with_usage_requested({**DATA, "stream_options": {"other": 1}})
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
    failure = protocol.classify(status, body, {"retry-after-ms": "250"})
    assert failure.reason == reason
    assert failure.retry_after == retry
    assert failure.body["error"]["message"]
    assert set(failure.body["error"]) == {"message", "type", "param", "code"}


def test_a_non_json_error_body_becomes_the_message():
    failure = protocol.classify(502, "<html>\n Bad   Gateway </html>")
    assert failure.message == "upstream answered HTTP 502: <html> Bad Gateway </html>"


def test_retry_after_headers():
    assert protocol.retry_after({"retry-after-ms": "1500"}) == 1.5
    assert protocol.retry_after({"retry-after": "2"}) == 2.0
    assert protocol.retry_after({"retry-after": "3600"}) == protocol.MAX_RETRY_AFTER
    assert protocol.retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == protocol.DEFAULT_RETRY_AFTER
    assert protocol.retry_after({}) == protocol.DEFAULT_RETRY_AFTER


def test_server_sent_events():
    lines = [": comment", "event: x", 'data: {"a": 1}', "", "data:first", "data: second", "", "", "data: [DONE]"]
    assert list(protocol.sse_data(lines)) == ['{"a": 1}', "first\nsecond", "[DONE]"]


def test_a_whole_completion_as_one_chunk():
    completion = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"total_tokens": 2},
    }
    assert protocol.completion_as_chunk(completion) == {
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
    ],
)
def test_settings_errors_name_the_variable(change, error):
    with pytest.raises(SettingsError, match=error):
        WorkerSettings.from_env({**POD_ENV, **change})
